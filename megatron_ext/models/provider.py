"""A registered HF decoder-only causal LM as a Megatron-core GPTModel (`build_model`), for any family of
megatron_ext.models.families.

The family supplies the block (TransformerConfig fields, layer spec, weight names); this module adds the parallel
layout, dtype, the CPU settings and megatron_ext's local kernels. RoPE inverse frequencies are taken from
transformers itself (default / llama3 / linear), so they match exactly. Transformer-engine layer specs on a GPU
when TE is importable, Megatron's local specs otherwise (CPU, or clusters without TE).
"""

from __future__ import annotations

import math

import torch

from megatron_ext.models.families import check_architecture, head_dim, rope_parameters

try:  # transformer-engine is a GPU-only extra; the local spec is the fallback
    import transformer_engine  # noqa: F401

    HAVE_TE = True
except (ImportError, OSError):
    HAVE_TE = False

__all__ = ["HAVE_TE", "RECOMPUTE", "build_model", "head_dim", "padded_vocab_size", "recompute_overrides",
           "transformer_config_from_hf", "unwrap_model", "use_transformer_engine", "validate_model_config"]


def padded_vocab_size(vocab_size: int, tp: int, multiple: int = 128) -> int:
    """Vocab rounded up to `multiple` (Megatron's make_vocab_size_divisible_by), independent of TP so that
    checkpoints reshard; it must then split evenly over TP ranks."""
    padded = int(math.ceil(vocab_size / multiple) * multiple)
    if padded % tp:
        raise ValueError(f"padded vocab {padded} is not divisible by tensor_parallel={tp}; use a tp dividing {multiple}")
    return padded


def validate_model_config(hf_config, tp: int = 1, pp: int = 1):
    """Raise ValueError (with the fix) unless the config is a registered family's supported architecture that this
    provider builds at this tp / pp; returns the family. Needs no process group: call it before starting one."""
    family = check_architecture(hf_config)
    kv_heads = hf_config.num_key_value_heads
    if kv_heads % tp:
        raise ValueError(
            f"tensor_parallel={tp} does not divide num_key_value_heads={kv_heads}: "
            f"use a tensor_parallel size among {[d for d in range(1, kv_heads + 1) if kv_heads % d == 0]}"
        )
    if hf_config.intermediate_size % tp:
        raise ValueError(f"tensor_parallel={tp} does not divide intermediate_size={hf_config.intermediate_size}")
    layers = hf_config.num_hidden_layers
    if layers % pp:
        raise ValueError(
            f"pipeline_parallel={pp} does not divide num_hidden_layers={layers}: "
            f"use one of {[d for d in range(1, layers + 1) if layers % d == 0]}"
        )
    if getattr(hf_config, "attention_bias", False):  # Llama / Qwen3 attention_bias: q, k, v *and* o_proj
        raise ValueError(f"attention_bias=True is not supported on Megatron: it adds an o_proj bias, which Megatron's "
                         f"GPT layer holds only together with MLP biases (add_bias_linear); released {family.name} "
                         "checkpoints have attention_bias=false")
    padded_vocab_size(hf_config.vocab_size, tp)
    return family


RECOMPUTE = ("none", "selective", "full")
"""Activation recomputation modes (`recompute_overrides`)."""


def recompute_overrides(mode: str) -> dict:
    """TransformerConfig fields of a recomputation mode: 'selective' is Megatron's (core attention recomputed in
    backward), 'full' checkpoints every layer (only its input kept; Megatron's uniform method, 1 layer per chunk)."""
    if mode not in RECOMPUTE:
        raise ValueError(f"recompute={mode!r}; valid: {list(RECOMPUTE)}")
    if mode == "selective":
        return {"recompute_granularity": "selective"}
    if mode == "full":
        return {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
    return {}


def use_transformer_engine(requested: bool | None = None) -> bool:
    if requested and not (HAVE_TE and torch.cuda.is_available()):
        raise ValueError("transformer-engine layers were requested but TE is not importable on a CUDA machine")
    return HAVE_TE and torch.cuda.is_available() if requested is None else requested


def transformer_config_from_hf(
    hf_config, *, tp: int = 1, pp: int = 1, dtype: torch.dtype = torch.float32, **overrides
):
    """Megatron `TransformerConfig` equivalent to a HF config of a registered family (extra fields via `overrides`)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    from megatron_ext import cpu_compat

    family = validate_model_config(hf_config, tp, pp)
    fields = family.transformer_config_fields(hf_config)
    fields.update(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        sequence_parallel=False,
    )
    if not torch.cuda.is_available():
        fields.update(cpu_compat.cpu_transformer_config_overrides())
    fields.update(overrides)
    return TransformerConfig(**fields)


def _hf_inv_freq(hf_config) -> torch.Tensor:
    """transformers' RoPE inverse frequencies for the config (the rope init functions are shared by the families)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rotary = LlamaRotaryEmbedding(hf_config)
    if getattr(rotary, "attention_scaling", 1.0) != 1.0:
        raise ValueError("RoPE variants with attention scaling are not supported")
    return rotary.inv_freq.detach().to(torch.float32).cpu()


def build_model(
    hf_config,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: torch.dtype = torch.float32,
    max_sequence_length: int | None = None,
    transformer_engine: bool | None = None,
    **config_overrides,
):
    """This rank's stage of the model as a GPTModel (parallel state must be initialised). Weights random."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    family = validate_model_config(hf_config, tp, pp)
    te = use_transformer_engine(transformer_engine)
    if not te:  # the local spec's SwiGLU goes through the activation-module hook (megatron_ext.local_kernels)
        config_overrides = {"use_te_activation_func": True, **config_overrides}
    config = transformer_config_from_hf(hf_config, tp=tp, pp=pp, dtype=dtype, **config_overrides)
    layer_spec = family.layer_spec(te)
    if not te:
        from megatron_ext.attention import SDPAttention
        from megatron_ext.local_kernels import SwiGLU, install_cross_entropy, install_rms_norm, install_rope

        layer_spec.submodules.self_attention.submodules.core_attention = SDPAttention
        if config.use_te_activation_func:
            layer_spec.submodules.mlp.submodules.activation_func = SwiGLU
        install_rope()
        install_cross_entropy()
    model = GPTModel(
        config=config,
        transformer_layer_spec=layer_spec,
        vocab_size=padded_vocab_size(hf_config.vocab_size, tp),
        max_sequence_length=max_sequence_length or hf_config.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True,
        share_embeddings_and_output_weights=bool(hf_config.tie_word_embeddings),
        position_embedding_type="rope",
        rotary_base=int(rope_parameters(hf_config)["rope_theta"]),
    )
    model.rotary_pos_emb.inv_freq = _hf_inv_freq(hf_config).to(model.rotary_pos_emb.inv_freq.device)
    if not te:
        install_rms_norm(model)  # the layer norms and, with qk_layernorm, the per-head q / k norms
    from megatron_ext.distributed import current_device

    for p in model.parameters():
        if p.dtype != dtype:  # the local spec's torch.nn.RMSNorm is made in fp32
            p.data = p.data.to(dtype)
    device = current_device()
    if any(p.device != device for p in model.parameters()):  # made on the host (CPU initialisation)
        model = model.to(device)
    model.hf_config = hf_config
    model.model_family = family
    return model


def unwrap_model(model):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while not hasattr(model, "decoder") and hasattr(model, "module"):
        model = model.module
    return model
