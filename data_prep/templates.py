"""Prompt templates exactly as the paper's code (sail-sg/understand-r1-zero, ``train_zero_math.py``) writes them.

Each template knows how to wrap a question, where generation stops, and how to pull the final answer out
of a response. Add one by adding an entry to ``TEMPLATES``.

As in the authors' actor: ``r1`` stops at ``</answer>`` (kept in the response); ``qwen_math`` and ``none`` (their
``no``) set no stop strings and end at the model's EOS. Answers: the last ``\\boxed{}`` for ``qwen_math`` / ``none``;
for ``r1`` the authors' strict answer-tag rule (``answer_tag_reward_fn``): the response must contain
``</think> <answer>`` and ``</answer>``, the answer is what follows the last ``<answer>`` (unboxed when it holds a box).
"""

from __future__ import annotations

from dataclasses import dataclass
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

    def format(self, question: str) -> str:
        return self.prefix + question + self.suffix


TEMPLATES: dict[str, PromptTemplate] = {
    "r1": PromptTemplate("r1", R1_PREFIX, R1_SUFFIX, ("</answer>",), _r1_answer),
    "qwen_math": PromptTemplate("qwen_math", QWEN_MATH_PREFIX, QWEN_MATH_SUFFIX, (), last_boxed_content),
    "none": PromptTemplate("none", "", "", (), last_boxed_content),
}


def get_template(name: str) -> PromptTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; valid names: {sorted(TEMPLATES)}") from None
