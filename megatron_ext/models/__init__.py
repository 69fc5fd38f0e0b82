"""Hugging Face decoder-only causal LMs on Megatron-core: the model-family registry and the model provider.

- `families`: `FAMILIES` (HF `model_type` -> `ModelFamily`: Llama, Qwen2 / Qwen2.5 / Qwen2.5-Math, Qwen3 dense),
  `model_family(config)`, `check_architecture(config)`; per family the Megatron TransformerConfig fields, layer
  spec and the HF <-> Megatron weight-name map (read by megatron_ext.weights).
- `provider`: `validate_model_config(config, tp, pp)` (before any process group), `transformer_config_from_hf`,
  `build_model` (this rank's GPTModel stage), `padded_vocab_size`, `recompute_overrides`, `unwrap_model`.
"""

from megatron_ext.models.families import (
    FAMILIES,
    ModelFamily,
    check_architecture,
    head_dim,
    model_family,
    rope_parameters,
    supported_model_types,
)
from megatron_ext.models.provider import (
    HAVE_TE,
    RECOMPUTE,
    build_model,
    padded_vocab_size,
    recompute_overrides,
    transformer_config_from_hf,
    unwrap_model,
    use_transformer_engine,
    validate_model_config,
)

__all__ = ["FAMILIES", "HAVE_TE", "ModelFamily", "RECOMPUTE", "build_model", "check_architecture", "head_dim",
           "model_family", "padded_vocab_size", "recompute_overrides", "rope_parameters", "supported_model_types",
           "transformer_config_from_hf", "unwrap_model", "use_transformer_engine", "validate_model_config"]
