"""Prompt templates exactly as the paper's code (sail-sg/understand-r1-zero, ``train_zero_math.py``) writes them.

Each template knows how to wrap a question, where generation stops, and how to pull the final answer out
of a response. Add one by adding an entry to ``TEMPLATES``.

``chat`` renders the question through the model's own chat template (``tokenizer.apply_chat_template``, an
optional system prompt first): what instruct models are trained on. Its answers are the last ``\\boxed{}``.

As in the authors' actor: ``r1`` stops at ``</answer>`` (kept in the response); ``qwen_math`` and ``none`` (their
``no``) set no stop strings and end at the model's EOS. Answers: the last ``\\boxed{}`` for ``qwen_math`` / ``none``;
for ``r1`` the authors' strict answer-tag rule (``answer_tag_reward_fn``): the response must contain
``</think> <answer>`` and ``</answer>``, the answer is what follows the last ``<answer>`` (unboxed when it holds a box).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from data_prep.answers import last_answer_tag_content, last_boxed_content

R1_PREFIX = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with the "
    "answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>.\nUser: "
)
R1_SUFFIX = "\nAssistant: <think>"
QWEN_MATH_PREFIX = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>user\n"
)
QWEN_MATH_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n"


def _r1_answer(response: str) -> str | None:
    """The authors' answer-tag rule: needs "</think> <answer>" and "</answer>"; the last <answer> tag's text,
    unboxed when it holds a box (an unclosed box gives None)."""
    if "</think> <answer>" not in response or "</answer>" not in response:
        return None
    inside = last_answer_tag_content(response)
    if inside is None:
        return None
    if "\\boxed" in inside:
        return last_boxed_content(inside)
    return inside


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    prefix: str
    """Text before the question."""
    suffix: str
    """Text after the question; generation continues from here."""
    stop: tuple[str, ...]
    """Strings that end generation (kept in the response, as the authors' vLLM settings do)."""
    extract_answer: Callable[[str], str | None]
    """Final answer of a response, or None when the response gives none."""
    uses_chat_template: bool = False
    """The prompt is the tokenizer's own chat template applied to the question (prefix and suffix unused)."""

    def format(self, question: str, tokenizer=None, system_prompt: str = "") -> str:
        """The prompt text. Chat templates need the model's tokenizer; `system_prompt` is for them only."""
        if not self.uses_chat_template:
            if system_prompt:
                raise ValueError(f"system_prompt is for template=chat; template {self.name!r} has its own text")
            return self.prefix + question + self.suffix
        return render_chat(question, tokenizer, system_prompt)


def render_chat(question: str, tokenizer, system_prompt: str = "") -> str:
    """The question as the tokenizer's chat template writes one user turn and opens the assistant's. A BOS the
    template writes is dropped when the tokenizer adds one itself on encoding (Llama 3), so it is not doubled."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", None) or "this model"
        raise ValueError(f"template=chat needs a tokenizer with a chat template, and {name} has none: use template "
                         "qwen_math, r1 or none, or add chat_template to its tokenizer_config.json")
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": question}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and tokenizer("x", add_special_tokens=True)["input_ids"][:1] == [
            tokenizer.bos_token_id]:
        text = text[len(bos):]
    return text


TEMPLATES: dict[str, PromptTemplate] = {
    "r1": PromptTemplate("r1", R1_PREFIX, R1_SUFFIX, ("</answer>",), _r1_answer),
    "qwen_math": PromptTemplate("qwen_math", QWEN_MATH_PREFIX, QWEN_MATH_SUFFIX, (), last_boxed_content),
    "none": PromptTemplate("none", "", "", (), last_boxed_content),
    "chat": PromptTemplate("chat", "", "", (), last_boxed_content, uses_chat_template=True),
}


def check_template(name: str, system_prompt: str = "", model_dir: str | None = None) -> PromptTemplate:
    """The template, refused with the fix before any model is loaded: an unknown name, a system prompt for a fixed
    template, template=chat for a model directory whose tokenizer has no chat template."""
    template = get_template(name)
    if system_prompt and not template.uses_chat_template:
        raise ValueError(f"system_prompt is for template=chat; template {name!r} has its own text")
    if template.uses_chat_template and model_dir and not _has_chat_template(Path(model_dir)):
        raise ValueError(f"template=chat: {model_dir} has no chat template (tokenizer_config.json 'chat_template' "
                         "or chat_template.jinja); use template qwen_math, r1 or none")
    return template


def _has_chat_template(model_dir: Path) -> bool:
    if (model_dir / "chat_template.jinja").exists() or (model_dir / "chat_template.json").exists():
        return True
    config = model_dir / "tokenizer_config.json"
    return config.exists() and bool(json.loads(config.read_text()).get("chat_template"))


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; valid names: {sorted(TEMPLATES)}") from None
