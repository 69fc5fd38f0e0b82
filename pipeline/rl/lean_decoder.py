"""A lean batched decoder for the torch rollout engine, for every registered model family (megatron_ext.models:
Llama, Qwen2 / Qwen2.5, Qwen3 dense).

transformers' forward spends most of a small model's decode step outside the matmuls (mask building, cache
bookkeeping, one projection per q/k/v and gate/up). This decoder runs the same maths with fused q|k|v and
gate|up projections, a KV cache preallocated for the whole generation, and a RoPE table computed once. It owns
no weights: the fused projections are buffers that the transformers model's q/k/v and gate/up parameters
become views of, so a weight update written into the transformers model is the decoder's update too.
With `kernels` (pipeline.rl.decode_kernels' compiled module, on CPU) a decode step runs fused kernels between
the matmuls instead of torch ops: the same maths, tested against this file's torch path.

The families' differences come from the transformers model it is given, not from its model_type: q/k/v (and o)
biases where the projections have them (Qwen2; Llama with attention_bias), per-head q / k RMSNorm before RoPE where
the attention has `q_norm` / `k_norm` (Qwen3; between the qkv matmul and the attention kernel, in torch ops, on the
kernel path), head_dim from the config. Which models it runs at all is the registry's (`unsupported_reason`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def unsupported_reason(hf_config) -> str | None:
    """Why this decoder cannot run the model (None when it can): not a registered family, or an architecture the
    family's entry refuses (megatron_ext.models.families.check_architecture)."""
    from megatron_ext.models.families import check_architecture

    try:
        check_architecture(hf_config)
    except ValueError as e:
        return str(e)
    return None


def _fuse(linears: list[torch.nn.Linear], name: str) -> torch.Tensor:
    """Concatenate the modules' `name` tensors into one buffer and make each module's parameter a view of it."""
    parts = [getattr(m, name) for m in linears]
    fused = torch.cat([p.detach() for p in parts], dim=0)
    start = 0
    for p in parts:
        rows = p.shape[0]
        p.data = fused[start : start + rows]
        start += rows
    return fused


def _norm_weight(attention: torch.nn.Module, name: str) -> torch.Tensor | None:
    """The weight of the attention's per-head norm `name` (Qwen3's q_norm / k_norm), None where it has none."""
    norm = getattr(attention, name, None)
    return None if norm is None else norm.weight


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T (+ bias), computed as (weight @ x.T).T: with few rows (a decode step) MKL runs the
    [out, in] x [in, rows] product 1.2-1.5x faster than F.linear's [rows, in] x [in, out]."""
    rows = x.reshape(-1, x.shape[-1])
    y = torch.mm(weight, rows.T).T if rows.shape[0] <= 64 else F.linear(rows, weight)
    if bias is not None:
        y = y + bias
    return y.view(*x.shape[:-1], weight.shape[0])


class LeanDecoder:
    def __init__(self, model, kernels=None):
        """`model`: a transformers causal LM of a registered family in eval mode (its q/k/v and gate/up parameters
        become views); `kernels`: the fused decode kernels' module (None: torch ops)."""
        reason = unsupported_reason(model.config)
        if reason:
            raise ValueError(f"the torch engine's decoder does not run this model ({reason}); generate with "
                             "vLLM (engine/backend 'vllm') or, for evaluation, transformers' generate (backend 'hf')")
        cfg = model.config
        self.model = model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.layers = []
        for layer in model.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
            self.layers.append(dict(
                norm1=layer.input_layernorm.weight, norm2=layer.post_attention_layernorm.weight,
                qkv=_fuse(qkv, "weight"), qkv_bias=_fuse(qkv, "bias") if attn.q_proj.bias is not None else None,
                o=attn.o_proj.weight, o_bias=attn.o_proj.bias, gate_up=_fuse([mlp.gate_proj, mlp.up_proj], "weight"),
                down=mlp.down_proj.weight,
                q_norm=_norm_weight(attn, "q_norm"), k_norm=_norm_weight(attn, "k_norm"),
            ))
        rotary = model.model.rotary_emb
        self.inv_freq = rotary.inv_freq.detach().float()
        self.rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self.scale = self.head_dim**-0.5
        self.kernels = kernels

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def _qk_norm(self, qk: torch.Tensor, layer: dict) -> torch.Tensor:
        """Per-head RMSNorm of the query heads and the key heads of qk [B, H + KV, T, D] (identity without it)."""
        if layer["q_norm"] is None:
            return qk
        return torch.cat([self._rms(qk[:, : self.heads], layer["q_norm"]),
                          self._rms(qk[:, self.heads :], layer["k_norm"])], dim=1)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = self.head_dim // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def start(self, input_ids: torch.Tensor, prompt_mask: torch.Tensor, max_new_tokens: int,
              rows: torch.Tensor | None = None) -> torch.Tensor:
        """Prefill left-padded prompts [N, P] (mask 1 on real tokens); return the last position's logits.

        `rows` [B]: row b of the generation continues prompt rows[b] (the n samples of a prompt share its
        prefill: its KV cache is computed once and copied); default one row per prompt."""
        B, P = input_ids.shape
        total = P + max_new_tokens
        device = input_ids.device
        L, KV, D = len(self.layers), self.kv_heads, self.head_dim
        # the fused kernels keep keys transposed, [.., D, total]: a query's scores are then contiguous
        key_shape = (L, B, KV, D, total) if self.kernels is not None else (L, B, KV, total, D)
        self.k_cache = torch.zeros(key_shape, device=device)
        self.v_cache = torch.zeros(L, B, KV, total, D, device=device)
        self.key_valid = torch.zeros(B, total, dtype=torch.bool, device=device)
        self.key_valid[:, :P] = prompt_mask.bool()
        freqs = torch.arange(total, device=device, dtype=torch.float32)[:, None] * self.inv_freq.to(device)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos_table, self.sin_table = emb.cos() * self.rope_scale, emb.sin() * self.rope_scale
        self.length = 0
        self.positions = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, P]
        logits = self._forward(input_ids, self.positions)
        self.positions = self.positions[:, -1:]
        if rows is not None:
            self.keep_rows(rows)
            logits = logits.index_select(0, rows)
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token per row [B]; return the next logits [B, V]."""
        self.positions = self.positions + 1
        if self.kernels is not None:
            return self._decode_fused(tokens)
        return self._forward(tokens[:, None], self.positions)

    def keep_rows(self, index: torch.Tensor) -> None:
        """Re-form the batch from these rows, in order (dropping finished rows, or repeating a prompt's rows)."""
        self.k_cache = self.k_cache.index_select(1, index)
        self.v_cache = self.v_cache.index_select(1, index)
        self.key_valid = self.key_valid.index_select(0, index)
        self.positions = self.positions.index_select(0, index)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        B, T = ids.shape
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        G = H // KV
        start, end = self.length, self.length + T
        if T == 1:
            self.key_valid[:, start] = True
        keys = self.key_valid[:, None, None, :end]  # [B, 1, 1, end]
        if T > 1:
            keys = keys & torch.ones(T, end, dtype=torch.bool, device=ids.device).tril(diagonal=end - T)
        else:  # decoding: the additive mask once for all layers, per (row, KV head) as baddbmm takes it
            bias = torch.zeros(B * KV, G, end, device=ids.device).masked_fill_(
                ~keys.view(B, 1, 1, end).expand(B, KV, G, end).reshape(B * KV, G, end), float("-inf"))
        cos, sin = self.cos_table[positions][:, None], self.sin_table[positions][:, None]  # [B, 1, T, D]
        h = self.model.model.embed_tokens.weight[ids]
        for i, layer in enumerate(self.layers):
            x = self._rms(h, layer["norm1"])
            qkv = _linear(x, layer["qkv"], layer["qkv_bias"]).view(B, T, H + 2 * KV, D).transpose(1, 2)
            qk = self._rope(self._qk_norm(qkv[:, : H + KV], layer), cos, sin)  # q and k heads rotated in one pass
            if self.kernels is not None:  # keys transposed
                self.k_cache[i, :, :, :, start:end] = qk[:, H:].transpose(-1, -2)
                k = self.k_cache[i, :, :, :, :end].transpose(-1, -2)
            else:
                self.k_cache[i, :, :, start:end] = qk[:, H:]
                k = self.k_cache[i, :, :, :end]
            self.v_cache[i, :, :, start:end] = qkv[:, H + KV :]
            v = self.v_cache[i, :, :, :end]
            if T == 1:  # a KV head's G query heads as its G queries: one baddbmm, no K/V expansion for GQA
                scores = torch.baddbmm(bias, qk[:, :H].reshape(B * KV, G, D),
                                       k.reshape(B * KV, end, D).transpose(1, 2), alpha=self.scale)
                context = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(B * KV, end, D)).view(B, 1, H * D)
            else:  # prefill; left-padding query rows see no key: their NaNs would reach the cache
                context = F.scaled_dot_product_attention(qk[:, :H], k, v, attn_mask=keys, scale=self.scale,
                                                         enable_gqa=KV != H).nan_to_num_(0.0)
                context = context.transpose(1, 2).reshape(B, T, H * D)
            h = h + _linear(context, layer["o"], layer["o_bias"])
            gate, up = _linear(self._rms(h, layer["norm2"]), layer["gate_up"]).chunk(2, dim=-1)
            h = h + _linear(F.silu(gate) * up, layer["down"])
        self.length = end
        last = self._rms(h[:, -1], self.model.model.norm.weight)
        return _linear(last, self.model.lm_head.weight)

    def _qk_norm_feature_major(self, qkv: torch.Tensor, layer: dict) -> None:
        """RMSNorm of each query and key head of the fused kernels' feature-major qkv [(H + 2 KV) * D, B], in place."""
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        for rows, weight in ((slice(0, H * D), layer["q_norm"]), (slice(H * D, (H + KV) * D), layer["k_norm"])):
            heads = qkv[rows].view(-1, D, qkv.shape[1])  # [heads, D, B]
            heads.copy_(self._rms(heads.transpose(1, 2), weight).transpose(1, 2))

    def _decode_fused(self, tokens: torch.Tensor) -> torch.Tensor:
        """One decode step through the fused kernels (layouts: decode_kernels.cpp); the next logits [B, V]."""
        kernels, layers = self.kernels, self.layers
        start = self.length
        positions = self.positions.view(-1)
        h = kernels.embed(self.model.model.embed_tokens.weight, tokens)
        x = kernels.add_rms_norm(h, None, layers[0]["norm1"], self.eps)
        for i, layer in enumerate(layers):  # x and context token-major [rows, features], the rest feature-major
            qkv = torch.mm(layer["qkv"], x.T)
            if layer["qkv_bias"] is not None:
                qkv += layer["qkv_bias"][:, None]
            if layer["q_norm"] is not None:  # per-head q / k RMSNorm before the kernel's RoPE, in place
                self._qk_norm_feature_major(qkv, layer)
            context = kernels.decode_attention(qkv, self.k_cache[i], self.v_cache[i], self.cos_table, self.sin_table,
                                               positions, self.key_valid, self.heads, start, self.scale)
            out = torch.mm(layer["o"], context.T)
            if layer["o_bias"] is not None:
                out += layer["o_bias"][:, None]
            x = kernels.add_rms_norm(h, out, layer["norm2"], self.eps)
            down = torch.mm(layer["down"], kernels.silu_mul(torch.mm(layer["gate_up"], x.T)))
            next_norm = layers[i + 1]["norm1"] if i + 1 < len(layers) else self.model.model.norm.weight
            x = kernels.add_rms_norm(h, down, next_norm, self.eps)
        self.length = start + 1
        return torch.mm(self.model.lm_head.weight, x.T).T
