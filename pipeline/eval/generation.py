"""The generate-function protocol evaluation runs on, and a backend on transformers' ``generate``.

Any callable with ``GenerateFn``'s signature can drive evaluation (the project's vLLM or torch rollout engine
plugs in the same way):

    fn = HFGenerate("outputs/rl/hf", batch_size=16)
    [[c]] = fn(["What is 2 + 2?"], n=1, temperature=0.0, top_p=1.0, max_new_tokens=64, stop=(), seed=0)
    c.text, c.num_tokens, c.truncated

A completion keeps its stop string (as the authors' vLLM evaluation does with ``include_stop_str_in_output``)
and is ``truncated`` only when it used the whole token budget without reaching EOS or a stop string.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from pipeline.rl.engine import stop_token_ids


@dataclass(frozen=True)
class Completion:
    text: str
    """The response text, ending with the stop string when one ended it."""
    num_tokens: int
    """Generated tokens, EOS or the stop string's last token included."""
    truncated: bool
    """True when generation hit ``max_new_tokens`` before EOS or a stop string."""


class GenerateFn(Protocol):
    def __call__(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 stop: tuple[str, ...], seed: int) -> list[list[Completion]]:
        """For each prompt, ``n`` completions (greedy when ``temperature`` is 0)."""


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """Text up to and including the earliest stop string, and whether one was found."""
    ends = [text.find(s) + len(s) for s in stop if s and s in text]
    return (text[: min(ends)], True) if ends else (text, False)


class _StopWatch:
    """A stopping criterion that ends rows at a stop string and remembers where each row stopped."""

    def __init__(self, tokenizer, prompt_len: int, stop: tuple[str, ...], eos_ids: list[int]):
        self.tokenizer, self.prompt_len, self.stop = tokenizer, prompt_len, tuple(s for s in stop if s)
        self.eos_ids = set(eos_ids)
        self.tail = max((len(s) for s in self.stop), default=0) + 8  # tokens to decode: >= 1 char each, plus slack
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_len
        done = [False] * input_ids.shape[0]
        last_tokens = input_ids[:, -1].tolist()  # one device -> host transfer per step, not one per row
        for row, last in enumerate(last_tokens):
            if row in self.stopped_at:
                done[row] = True
                continue
            if last in self.eos_ids:
                self.stopped_at[row] = generated
                done[row] = True
            elif self.stop:
                tail = self.tokenizer.decode(input_ids[row, -min(self.tail, generated):].tolist(),
                                             skip_special_tokens=False)
                if any(s in tail for s in self.stop):
                    self.stopped_at[row] = generated
                    done[row] = True
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFGenerate:
    """``GenerateFn`` on a Hugging Face model directory with ``model.generate`` (left-padded batches)."""

    def __init__(self, model_dir: str, *, batch_size: int = 16, device: str | None = None,
                 dtype: torch.dtype | str = "float32"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(dtype, str):
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"dtype {dtype!r} is not a torch dtype; use float32, bfloat16 or float16")
            dtype = getattr(torch, dtype)

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.eos_ids = stop_token_ids(self.model, self.tokenizer)
        if not self.eos_ids:
            raise ValueError(f"{model_dir}: neither the model config nor the tokenizer names an EOS token; set "
                             "eos_token_id in config.json")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (sequences per generate call), got {batch_size}")
        self.batch_size = batch_size

    def __call__(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 stop: tuple[str, ...], seed: int) -> list[list[Completion]]:
        if n < 1 or max_new_tokens < 1:
            raise ValueError(f"n and max_new_tokens must be >= 1, got n={n}, max_new_tokens={max_new_tokens}")
        per_call = max(1, self.batch_size // n)
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), per_call):
            torch.manual_seed(seed + start)
            flat = self._generate(prompts[start : start + per_call], n, temperature, top_p, max_new_tokens, stop)
            out += [flat[i * n : (i + 1) * n] for i in range(len(flat) // n)]
        return out

    @torch.no_grad()
    def _generate(self, prompts, n, temperature, top_p, max_new_tokens, stop) -> list[Completion]:
        from transformers import StoppingCriteriaList

        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=True).to(self.device)
        prompt_len = batch["input_ids"].shape[1]
        watch = _StopWatch(self.tokenizer, prompt_len, stop, self.eos_ids)
        # top_k=0: transformers' default top-k of 50 would make sampling differ from vLLM's (and the paper's)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else \
            dict(do_sample=False)
        ids = self.model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n,
                                  stopping_criteria=StoppingCriteriaList([watch]), eos_token_id=self.eos_ids,
                                  pad_token_id=self.pad_id, **sampling)[:, prompt_len:]
        completions = []
        for row in range(ids.shape[0]):
            length = watch.stopped_at.get(row, ids.shape[1])
            tokens = ids[row, :length].tolist()
            text, stopped = cut_at_stop(self.tokenizer.decode(tokens, skip_special_tokens=True), stop)
            ended = row in watch.stopped_at or stopped
            completions.append(Completion(text, length, truncated=not ended and length >= max_new_tokens))
        return completions


class EngineGenerate:
    """``GenerateFn`` on the project's rollout engines (``pipeline.rl.engine``: vllm, torch, auto), the same
    engines stage two samples with, so evaluation and training decode identically."""

    def __init__(self, model_dir: str, *, engine: str = "auto", max_model_len: int = 4096, **options):
        from transformers import AutoTokenizer

        from pipeline.rl.engine import EngineSpec, build_engine

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.engine = build_engine(engine, EngineSpec(model_dir, max_model_len=max_model_len, options=options))

    def __call__(self, prompts: list[str], *, n: int, temperature: float, top_p: float, max_new_tokens: int,
                 stop: tuple[str, ...], seed: int) -> list[list[Completion]]:
        from pipeline.rl.engine import SamplingSettings

        ids = [self.tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
        groups = self.engine.generate(ids, SamplingSettings(max_new_tokens=max_new_tokens, temperature=temperature,
                                                               top_p=top_p, stop=tuple(stop), n=n, seed=seed))
        return [[Completion(s.text, len(s.token_ids), s.truncated) for s in group] for group in groups]


def vllm_generate(model_dir: str, **options) -> EngineGenerate:
    return EngineGenerate(model_dir, engine="vllm", **options)


def torch_generate(model_dir: str, **options) -> EngineGenerate:
    return EngineGenerate(model_dir, engine="torch", **options)
