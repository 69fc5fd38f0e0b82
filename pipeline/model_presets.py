"""Named Llama shapes for stage one's random initialisation (a preset builds a transformers `LlamaConfig`).

- `tiny`: Llama-3.2 features at toy size (~4M parameters at a 1-2k vocabulary) for CPU runs and tests:
  hidden 256, 4 layers, 8 query heads / 2 KV heads (GQA 4:1), SwiGLU FFN 1024, tied embeddings, RoPE theta
  500000 with llama3 scaling. Its vocabulary comes from the tokenizer (rounded up to a multiple of 128, as
  Megatron pads it anyway, so the exported model and the trained one have the same softmax).
- `llama3.2-3b`: exactly the published Llama-3.2-3B config (28 layers, hidden 3072, 24 / 8 heads, FFN 8192,
  vocab 128256, tied, RoPE theta 500000 with llama3 scaling factor 32, low 1, high 4, original 8192).

A preset is a plain function returning `LlamaConfig`; `build_preset(name, tokenizer=..., overrides=...)` is
the one entry point.
"""

from __future__ import annotations

import math
from typing import Callable

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _special_ids(tokenizer) -> dict:
    if tokenizer is None:
        return {}
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}


def tiny(tokenizer=None) -> dict:
    vocab = len(tokenizer) if tokenizer is not None else 1024
    return dict(
        vocab_size=int(math.ceil(vocab / 128) * 128),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        rope_parameters=dict(LLAMA3_ROPE),
        dtype="float32",
        **_special_ids(tokenizer),
    )


def llama32_3b(tokenizer=None) -> dict:
    fields = dict(
        vocab_size=128256,
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=28,
        num_attention_heads=24,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        rope_parameters=dict(LLAMA3_ROPE),
        bos_token_id=128000,
        eos_token_id=128001,
        dtype="bfloat16",
    )
    if tokenizer is not None and len(tokenizer) > fields["vocab_size"]:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but llama3.2-3b has a 128256-token vocabulary; "
                         "use the Llama-3 tokenizer (or the tiny preset)")
    return fields


PRESETS: dict[str, Callable] = {"tiny": tiny, "llama3.2-3b": llama32_3b}


def build_preset(name: str, *, tokenizer=None, overrides: dict | None = None):
    """`LlamaConfig` of preset `name`, its vocabulary sized from `tokenizer` where the preset allows it."""
    from transformers import LlamaConfig

    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(PRESETS)}")
    fields = PRESETS[name](tokenizer)
    unknown = sorted(set(overrides or {}) - set(LlamaConfig().to_dict()) - set(fields))
    if unknown:
        raise ValueError(f"model.overrides has fields LlamaConfig does not know: {unknown}")
    fields.update(overrides or {})
    if tokenizer is not None and fields["vocab_size"] < len(tokenizer):
        raise ValueError(f"model vocab_size {fields['vocab_size']} is smaller than the tokenizer ({len(tokenizer)} "
                         "tokens): drop the vocab_size override")
    return LlamaConfig(**fields)
