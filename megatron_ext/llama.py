"""Llama-3.x as a Megatron-core GPTModel, built from a Hugging Face `LlamaConfig`.

Covers everything Llama-3.2-3B uses: GQA, SwiGLU, RMSNorm eps, RoPE theta with llama3 / linear scaling
(inverse frequencies are taken from transformers itself, so they match exactly), tied or untied embeddings,
optional attention bias. Transformer-engine layer specs on a GPU when TE is importable, Megatron's local
specs otherwise (CPU, or clusters without TE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

try:  # transformer-engine is a GPU-only extra; the local spec is the fallback
    import transformer_engine  # noqa: F401

    HAVE_TE = True
except (ImportError, OSError):
    HAVE_TE = False

_STATIC_ROPE_TYPES = ("default", "llama3", "linear")


def _rope_parameters(hf_config) -> dict:
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:  # transformers 4.x
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params = dict(params)
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def head_dim(hf_config) -> int:
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


def padded_vocab_size(vocab_size: int, tp: int, multiple: int = 128) -> int:
    """Vocab rounded up to `multiple` (Megatron's make_vocab_size_divisible_by), independent of TP so that
    checkpoints reshard; it must then split evenly over TP ranks."""
    padded = int(math.ceil(vocab_size / multiple) * multiple)
    if padded % tp:
        raise ValueError(f"padded vocab {padded} is not divisible by tensor_parallel={tp}; use a tp dividing {multiple}")
    return padded


def validate_llama_config(hf_config, tp: int = 1, pp: int = 1) -> None:
    """Raise ValueError (with the fix) when the config is not a Llama this provider builds at this tp/pp."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type != "llama":
        raise ValueError(f"expected a Llama config (model_type 'llama'), got model_type {model_type!r}")
    heads, kv_heads = hf_config.num_attention_heads, hf_config.num_key_value_heads
    if heads % kv_heads:
        raise ValueError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
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
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {hf_config.hidden_act!r} is not supported (Llama uses 'silu')")
    if getattr(hf_config, "mlp_bias", False):
        raise ValueError("mlp_bias=True is not supported (Llama checkpoints have no MLP bias)")
    rope_type = _rope_parameters(hf_config)["rope_type"]
    if rope_type not in _STATIC_ROPE_TYPES:
        raise ValueError(f"rope type {rope_type!r} is not supported; supported: {list(_STATIC_ROPE_TYPES)}")
    padded_vocab_size(hf_config.vocab_size, tp)


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
    """Megatron `TransformerConfig` equivalent to a HF Llama config (extra fields via `overrides`)."""
    from megatron.core.transformer.transformer_config import TransformerConfig

    from megatron_ext import cpu_compat

    validate_llama_config(hf_config, tp, pp)
    fields = dict(
        num_layers=hf_config.num_hidden_layers,
        hidden_size=hf_config.hidden_size,
        ffn_hidden_size=hf_config.intermediate_size,
        num_attention_heads=hf_config.num_attention_heads,
        num_query_groups=hf_config.num_key_value_heads,
        kv_channels=head_dim(hf_config),
        normalization="RMSNorm",
        layernorm_epsilon=hf_config.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=bool(getattr(hf_config, "attention_bias", False)),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=getattr(hf_config, "initializer_range", 0.02),
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
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    rotary = LlamaRotaryEmbedding(hf_config)
    if getattr(rotary, "attention_scaling", 1.0) != 1.0:
        raise ValueError("RoPE variants with attention scaling are not supported")
    return rotary.inv_freq.detach().to(torch.float32).cpu()


def build_llama_model(
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
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    te = use_transformer_engine(transformer_engine)
    if not te:  # the local spec's SwiGLU goes through the activation-module hook (megatron_ext.local_kernels)
        config_overrides = {"use_te_activation_func": True, **config_overrides}
    config = transformer_config_from_hf(hf_config, tp=tp, pp=pp, dtype=dtype, **config_overrides)
    if te:
        layer_spec = get_gpt_layer_with_transformer_engine_spec()
    else:
        from megatron_ext.attention import SDPAttention
        from megatron_ext.local_kernels import SwiGLU, install_cross_entropy, install_rms_norm, install_rope

        layer_spec = get_gpt_layer_local_spec(normalization="RMSNorm")
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
        rotary_base=int(_rope_parameters(hf_config)["rope_theta"]),
    )
    model.rotary_pos_emb.inv_freq = _hf_inv_freq(hf_config).to(model.rotary_pos_emb.inv_freq.device)
    if not te:
        install_rms_norm(model)
    from megatron_ext.distributed import current_device

    for p in model.parameters():
        if p.dtype != dtype:  # the local spec's torch.nn.RMSNorm is made in fp32
            p.data = p.data.to(dtype)
    device = current_device()
    if any(p.device != device for p in model.parameters()):  # made on the host (CPU initialisation)
        model = model.to(device)
    model.hf_config = hf_config
    return model


def unwrap_model(model):
    """The GPTModel inside DDP / Float16Module wrappers."""
    while not hasattr(model, "decoder") and hasattr(model, "module"):
        model = model.module
    return model
