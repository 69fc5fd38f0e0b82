"""The model-family registry: which Hugging Face decoder-only causal LMs run here, and how each maps onto Megatron.

One entry per family, chosen by the HF config's `model_type` from `FAMILIES` (an explicit dict; the error for
anything else lists the supported names). An entry says what sets the family apart from the Llama block that every
family here shares (pre-norm RMSNorm, RoPE, GQA, SwiGLU MLP without bias, no o_proj bias):

| family | model_type | checkpoints | Megatron | HF tensors beyond Llama's |
|---|---|---|---|---|
| Llama  | llama | Llama-3.x (3.2-3B the paper's) | as Llama | - |
| Qwen2  | qwen2 | Qwen2, Qwen2.5, Qwen2.5-Math (the paper's Qwen results) | `add_qkv_bias` | q/k/v_proj.bias |
| Qwen3  | qwen3 | Qwen3 dense | `qk_layernorm` (RMSNorm over head_dim, before RoPE) | q_norm / k_norm.weight |

Tied or untied embeddings, RoPE theta (and llama3 / linear scaling), GQA and an explicit `head_dim` that differs
from hidden / heads are read from the config for every family. Sliding-window attention (Qwen2 / Qwen3's
`use_sliding_window`, false in released checkpoints; `max_window_layers` then has no effect) is refused.

Everything outside this module that needs a family difference asks the entry (`model_family(config)`) or reads the
config; nothing else branches on `model_type` (DESIGN.md). Adding a family: a `ModelFamily` entry whose flags say
what it adds; a new kind of tensor also needs its row in `_LAYER_TENSOR_SHAPES` and its mapping in `layer_weights`.
"""

from __future__ import annotations

from dataclasses import dataclass

STATIC_ROPE_TYPES = ("default", "llama3", "linear")
"""RoPE variants whose inverse frequencies are fixed (Megatron takes transformers' table; see models.provider)."""


def rope_parameters(hf_config) -> dict:
    """RoPE settings with `rope_type` and `rope_theta`, from transformers 5's `rope_parameters` or 4.x's
    `rope_theta` / `rope_scaling`."""
    params = getattr(hf_config, "rope_parameters", None)
    if params is None:  # transformers 4.x
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
        params.setdefault("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    params = dict(params)
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def head_dim(hf_config) -> int:
    """Per-head width: the config's explicit `head_dim` (Qwen3, Llama-3.2) or hidden / heads."""
    return getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads


# Megatron parameter name inside a decoder layer -> (HF names inside `model.layers.{i}.`, layout kind).
# Kinds (megatron_ext.weights): "replicated" (same tensor on every TP rank), "qkv" (HF q, k, v rows interleaved
# per query group, split over TP), "row" (input dimension split over TP), "glu" ([gate; up] per TP rank).
# Norms are listed under both spellings: the local spec's `input_layernorm` / `pre_mlp_layernorm`, and the
# transformer-engine spec's norms fused into the following linear (`layer_norm_weight`).
_LLAMA_LAYER_WEIGHTS: dict[str, tuple[tuple[str, ...], str]] = {
    "input_layernorm.weight": (("input_layernorm.weight",), "replicated"),
    "self_attention.linear_qkv.layer_norm_weight": (("input_layernorm.weight",), "replicated"),
    "pre_mlp_layernorm.weight": (("post_attention_layernorm.weight",), "replicated"),
    "mlp.linear_fc1.layer_norm_weight": (("post_attention_layernorm.weight",), "replicated"),
    "self_attention.linear_qkv.weight": (
        ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), "qkv"),
    "self_attention.linear_proj.weight": (("self_attn.o_proj.weight",), "row"),
    "mlp.linear_fc1.weight": (("mlp.gate_proj.weight", "mlp.up_proj.weight"), "glu"),
    "mlp.linear_fc2.weight": (("mlp.down_proj.weight",), "row"),
}
_QKV_BIAS_WEIGHTS = {
    "self_attention.linear_qkv.bias": (
        ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"), "qkv"),
}
_QK_NORM_WEIGHTS = {  # Megatron's SelfAttention q_layernorm / k_layernorm: one RMSNorm over head_dim, every head
    "self_attention.q_layernorm.weight": (("self_attn.q_norm.weight",), "replicated"),
    "self_attention.k_layernorm.weight": (("self_attn.k_norm.weight",), "replicated"),
}


def _layer_tensor_shapes(hf_config) -> dict[str, tuple[int, ...]]:
    """Shape of every per-layer HF tensor any family has (a family's map picks its own)."""
    h, ffn = hf_config.hidden_size, hf_config.intermediate_size
    hd, nq, nkv = head_dim(hf_config), hf_config.num_attention_heads, hf_config.num_key_value_heads
    return {
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (nq * hd, h),
        "self_attn.k_proj.weight": (nkv * hd, h),
        "self_attn.v_proj.weight": (nkv * hd, h),
        "self_attn.q_proj.bias": (nq * hd,),
        "self_attn.k_proj.bias": (nkv * hd,),
        "self_attn.v_proj.bias": (nkv * hd,),
        "self_attn.q_norm.weight": (hd,),
        "self_attn.k_norm.weight": (hd,),
        "self_attn.o_proj.weight": (h, nq * hd),
        "mlp.gate_proj.weight": (ffn, h),
        "mlp.up_proj.weight": (ffn, h),
        "mlp.down_proj.weight": (h, ffn),
    }


@dataclass(frozen=True)
class ModelFamily:
    name: str
    """Display name, used in messages."""
    model_types: tuple[str, ...]
    """HF `model_type` values of the family."""
    checkpoints: str
    """Published models it covers (for messages and docs)."""
    qkv_bias: bool = False
    """q/k/v projections carry a bias (Qwen2): Megatron `add_qkv_bias`, HF `q/k/v_proj.bias`."""
    qk_norm: bool = False
    """Per-head RMSNorm of queries and keys before RoPE (Qwen3): Megatron `qk_layernorm` with the spec's norm,
    HF `self_attn.q_norm` / `k_norm`."""

    # ---- what the HF config must say -------------------------------------------------------------------------

    def architecture_problems(self, hf_config) -> list[str]:
        """Why this config is not the family's supported architecture (empty when it is). These are facts of the
        model, checked by the Megatron provider and by the rollout engines alike; parallel layouts are the
        provider's (models.provider.validate_model_config)."""
        problems = []
        heads, kv_heads = hf_config.num_attention_heads, hf_config.num_key_value_heads
        if heads % kv_heads:
            problems.append(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        act = getattr(hf_config, "hidden_act", "silu")
        if act != "silu":
            problems.append(f"hidden_act {act!r} is not supported ({self.name} uses 'silu' in a SwiGLU MLP)")
        if getattr(hf_config, "mlp_bias", False):
            problems.append(f"mlp_bias=True is not supported ({self.name} checkpoints have no MLP bias)")
        layer_types = getattr(hf_config, "layer_types", None) or []
        sliding = [i for i, t in enumerate(layer_types) if t != "full_attention"]
        if getattr(hf_config, "use_sliding_window", False) or sliding:
            where = f" (layers {sliding[:4]}{'...' if len(sliding) > 4 else ''} are {layer_types[sliding[0]]!r})" \
                if sliding else ""
            problems.append(
                f"sliding-window attention is not supported{where}: set use_sliding_window=false (as every released "
                f"{self.name} checkpoint does; max_window_layers / sliding_window then have no effect)")
        rope_type = rope_parameters(hf_config)["rope_type"]
        if rope_type not in STATIC_ROPE_TYPES:
            problems.append(f"rope type {rope_type!r} is not supported; supported: {list(STATIC_ROPE_TYPES)}")
        return problems

    # ---- Megatron: TransformerConfig fields, layer spec, weight names ----------------------------------------

    def transformer_config_fields(self, hf_config) -> dict:
        """The Megatron `TransformerConfig` fields of this family's block for `hf_config` (parallel layout, dtype
        and CPU settings are added by models.provider)."""
        import torch.nn.functional as F

        return dict(
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
            add_qkv_bias=self.qkv_bias,
            qk_layernorm=self.qk_norm,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            init_method_std=getattr(hf_config, "initializer_range", 0.02),
        )

    def layer_spec(self, transformer_engine: bool):
        """Megatron's GPT layer spec for the family: transformer-engine modules or the local ones (whose core
        attention, SwiGLU, RoPE and RMSNorm models.provider then swaps for megatron_ext's)."""
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_local_spec,
            get_gpt_layer_with_transformer_engine_spec,
        )

        if transformer_engine:
            return get_gpt_layer_with_transformer_engine_spec(qk_layernorm=self.qk_norm)
        return get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=self.qk_norm)

    def layer_weights(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """Megatron parameter name in a decoder layer -> (HF names in `model.layers.{i}.`, layout kind)."""
        weights = dict(_LLAMA_LAYER_WEIGHTS)
        if self.qkv_bias:
            weights.update(_QKV_BIAS_WEIGHTS)
        if self.qk_norm:
            weights.update(_QK_NORM_WEIGHTS)
        return weights

    def hf_tensor_shapes(self, hf_config) -> dict[str, tuple[int, ...]]:
        """Every tensor a HF checkpoint of this family and config holds, with its shape."""
        h, v = hf_config.hidden_size, hf_config.vocab_size
        shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
        if not hf_config.tie_word_embeddings:
            shapes["lm_head.weight"] = (v, h)
        per_layer = _layer_tensor_shapes(hf_config)
        names = sorted({n for hf_names, _ in self.layer_weights().values() for n in hf_names})
        for i in range(hf_config.num_hidden_layers):
            shapes.update({f"model.layers.{i}.{n}": per_layer[n] for n in names})
        return shapes


LLAMA = ModelFamily("Llama", ("llama",), "Llama-3.x (Llama-3.2-3B)")
QWEN2 = ModelFamily("Qwen2", ("qwen2",), "Qwen2, Qwen2.5, Qwen2.5-Math", qkv_bias=True)
QWEN3 = ModelFamily("Qwen3", ("qwen3",), "Qwen3 dense", qk_norm=True)

FAMILIES: dict[str, ModelFamily] = {t: f for f in (LLAMA, QWEN2, QWEN3) for t in f.model_types}
"""HF `model_type` -> family: the registry."""


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


def model_family(hf_config) -> ModelFamily:
    """The registered family of a HF config; ValueError naming the supported ones otherwise."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type not in FAMILIES:
        supported = ", ".join(f"{t!r} ({FAMILIES[t].checkpoints})" for t in supported_model_types())
        raise ValueError(f"model_type {model_type!r} is not a supported model family; supported: {supported}")
    return FAMILIES[model_type]


def check_architecture(hf_config) -> ModelFamily:
    """The config's family, after checking the architecture is one it supports (ValueError with every reason)."""
    family = model_family(hf_config)
    problems = family.architecture_problems(hf_config)
    if problems:
        raise ValueError(f"{family.name} config not supported: " + "; ".join(problems))
    return family
