"""Core attention through `torch.nn.functional.scaled_dot_product_attention` for Megatron's local layer spec.

Megatron's local `DotProductAttention` materialises the [b, np, s, s] scores with baddbmm, a masked softmax and
bmm (and repeats K/V for GQA); on a CPU that is ~30% slower than transformers' SDPA path. This module has the
same constructor and forward contract and is swapped into the local spec by `megatron_ext.models` (every family;
Qwen3's q/k norms run before it, in Megatron's SelfAttention, as in transformers). GPU runs
with transformer-engine use TE's fused attention instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule

from megatron_ext import shared_prefix


class SDPAttention(MegatronModule):
    def __init__(self, config, layer_number: int, attn_mask_type: AttnMaskType, attention_type: str,
                 attention_dropout: float | None = None, softmax_scale: float | None = None,
                 cp_comm_type: str | None = None, pg_collection=None):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism; use transformer-engine layers")
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        """query [sq, b, np, hn], key/value [sk, b, ng, hn] -> context [sq, b, np * hn]."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPAttention supports neither packed sequences nor attention bias")
        layout = shared_prefix.active()
        if layout is not None:
            if attention_mask is not None:
                raise ValueError("the shared-prefix layout builds its own attention mask; pass attention_mask=None")
            return shared_prefix.attention(query, key, value, layout, scale=self.softmax_scale,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        sq, b, np_, hn = query.shape
        sk = key.shape[0]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        mask_type = attn_mask_type or self.attn_mask_type
        attn_mask, is_causal = None, False
        if attention_mask is not None:
            attn_mask = ~attention_mask  # Megatron marks masked positions True, SDPA marks kept ones
        elif mask_type == AttnMaskType.causal:
            if sq == sk:
                is_causal = True
            else:  # queries are the last sq positions of sk (decoding with a cache)
                attn_mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(diagonal=sk - sq)
        context = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=is_causal,
            dropout_p=self.dropout_p if self.training else 0.0, scale=self.softmax_scale,
            enable_gqa=k.shape[1] != np_,
        )
        return context.permute(2, 0, 1, 3).reshape(sq, b, np_ * hn)
