"""A shared-prompt layout for the policy update: each group's prompt runs once, and its G responses attend to it.

A question's G responses share its prompt, and a causal model's activations over the prompt do not depend on
what follows, so the one-row-per-response layout [B, P + R] computes every prompt G times. Here a row holds a
whole group: its prompt (right-padded to P), then its G responses, each right-padded to R:

    [prompt, pad.. | response 1 | response 2 | ... | response G]        S = P + G * R positions

Response i's queries see the prompt's real tokens and response i's own earlier tokens, at the positions they
have in their own sequence (prompt 0..L-1, response L..), so every logit and gradient is the per-response
layout's (tests/test_shared_prefix.py compares them); the linear layers, norms and MLPs see P + G*R tokens per
group instead of G * (P + R). Attention and RoPE read the layout from `active()`, which `use(layout)` sets
around the model's forward: `megatron_ext.attention.SDPAttention` and the RoPE of `megatron_ext.local_kernels`
follow it, so the layout needs Megatron's local (non-transformer-engine) layers.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class SharedPrefixLayout:
    prompt_len: int
    """P: the prompt part's length (the longest prompt of the batch)."""
    response_len: int
    """R: each response's slot (the longest response of the batch)."""
    group_size: int
    """G: responses per row."""
    positions_Sb: torch.Tensor
    """Each packed token's position in its own prompt + response sequence, [S, b] (Megatron's sequence-first)."""
    prompt_valid_bP: torch.Tensor
    """True on the real prompt tokens of each row, [b, P] (False on its right padding)."""
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    """What every layer's attention and RoPE derive from the layout (masks, RoPE tables), built once per forward."""


_active: SharedPrefixLayout | None = None


@contextmanager
def use(layout: SharedPrefixLayout | None):
    """Run the model's forward in `layout` (None: the ordinary layout)."""
    global _active
    previous, _active = _active, layout
    try:
        yield
    finally:
        _active = previous


def active() -> SharedPrefixLayout | None:
    return _active


def rope_freqs(freqs: torch.Tensor, layout: SharedPrefixLayout) -> torch.Tensor:
    """Megatron's RoPE angles for positions 0..S-1, [S, 1, 1, D] -> each packed token's own, [S, b, 1, D]."""
    return freqs[:, 0, 0][layout.positions_Sb].unsqueeze(2)


def attention(query, key, value, layout: SharedPrefixLayout, *, scale=None, dropout_p: float = 0.0) -> torch.Tensor:
    """Core attention in the layout: query [S, b, np, hn], key/value [S, b, ng, hn] -> context [S, b, np * hn]."""
    S, b, np_, hn = query.shape
    ng = key.shape[2]
    P, R, G = layout.prompt_len, layout.response_len, layout.group_size
    if S != P + G * R:
        raise ValueError(f"shared-prefix layout of {P} + {G} x {R} positions, but the sequence has {S}")
    # [b, heads, S, hn] split into prompt and responses (a slice's backward would zero-fill a full-size gradient)
    (q_prompt, q_responses), (k_prompt, k_responses), (v_prompt, v_responses) = (
        t.permute(1, 2, 0, 3).split([P, G * R], dim=2) for t in (query, key, value))
    gqa = ng != np_
    # The prompt part: causal (its right padding sees the real tokens before it, so no row is empty).
    prompt = F.scaled_dot_product_attention(q_prompt, k_prompt, v_prompt, is_causal=True, scale=scale,
                                            dropout_p=dropout_p, enable_gqa=gqa)

    def per_response(t):  # [b, heads, G * R, hn] -> [b * G, heads, R, hn]
        return t.unflatten(2, (G, R)).transpose(1, 2).flatten(0, 1)

    def prompt_copies(t):  # [b, heads, P, hn] -> [b * G, heads, P, hn]: what each response sees of its prompt
        return t.unsqueeze(1).expand(b, G, *t.shape[1:]).flatten(0, 1)

    keys = torch.cat([prompt_copies(k_prompt), per_response(k_responses)], dim=2)  # [b * G, ng, P + R, hn]
    values = torch.cat([prompt_copies(v_prompt), per_response(v_responses)], dim=2)
    if "response_mask" not in layout.cache:  # additive: 0 where a response query sees the key, -inf elsewhere
        causal = torch.ones(R, R, dtype=torch.bool, device=query.device).tril()
        sees = torch.cat([layout.prompt_valid_bP.repeat_interleave(G, dim=0)[:, None, None, :].expand(b * G, 1, R, P),
                          causal.expand(b * G, 1, R, R)], dim=-1)  # [b * G, 1, R, P + R]
        layout.cache["response_mask"] = torch.zeros(sees.shape, dtype=query.dtype, device=query.device).masked_fill_(
            ~sees, float("-inf"))
    mask = layout.cache["response_mask"]
    responses = F.scaled_dot_product_attention(per_response(q_responses), keys, values, attn_mask=mask, scale=scale,
                                               dropout_p=dropout_p, enable_gqa=gqa)  # [b * G, np, R, hn]
    responses = responses.unflatten(0, (b, G)).transpose(1, 2).flatten(2, 3)  # [b, np, G * R, hn]
    context = torch.cat([prompt, responses], dim=2)  # [b, np, S, hn]
    return context.permute(2, 0, 1, 3).reshape(S, b, np_ * hn)


def pack_groups(tokens_BS: torch.Tensor, response_mask_BS: torch.Tensor, group_size: int, pad_id: int = 0):
    """The layout of right-padded prompt + response rows whose consecutive groups of `group_size` share a prompt.

    Returns None when the rows are not like that (a group with different prompts, a row without response
    tokens or with padding inside its prompt + response, rows not a multiple of the group). Otherwise a dict:
    `tokens` [n, S] (n = B / G rows, one per group), `layout`, `source_col` [B, R] (for each response token, the
    column of its group's row whose logits predict it: the prompt's last token for the first), `response_tokens`
    [B, R], `response_mask` [B, R] and `position_index` [B, R] (each response token's column in the [B, S] input,
    to read per-token tensors such as behaviour log-probs from it). `microbatches` splits it."""
    B, S_in = tokens_BS.shape
    G = group_size
    if B == 0 or B % G:
        return None
    mask = response_mask_BS.bool()
    lengths = mask.sum(1)
    prompt_lengths = mask.int().argmax(1)  # first response position
    if (lengths == 0).any() or (prompt_lengths == 0).any():
        return None
    cols = torch.arange(S_in, device=mask.device)
    inside = (cols >= prompt_lengths[:, None]) & (cols < (prompt_lengths + lengths)[:, None])
    if not torch.equal(inside, mask):  # responses must be one contiguous run right after the prompt
        return None
    n = B // G
    first = torch.arange(0, B, G, device=mask.device)
    prompt_of_row = torch.where(cols < prompt_lengths[:, None], tokens_BS, -1)
    if not (prompt_of_row.view(n, G, S_in) == prompt_of_row[first][:, None]).all():
        return None
    P, R = int(prompt_lengths.max()), int(lengths.max())
    S = P + G * R
    L_n = prompt_lengths[first]
    t = torch.arange(R, device=mask.device)
    packed = torch.full((n, S), pad_id, dtype=tokens_BS.dtype, device=tokens_BS.device)
    packed[:, :P] = torch.where(cols[None, :P] < L_n[:, None], tokens_BS[first, :P], pad_id)
    position_index = (prompt_lengths[:, None] + t).clamp(max=S_in - 1)  # [B, R]
    response_mask = t[None] < lengths[:, None]
    response_tokens = torch.where(response_mask, tokens_BS.gather(1, position_index), pad_id)
    packed[:, P:] = response_tokens.view(n, G * R)
    positions = torch.cat([torch.arange(P, device=mask.device).expand(n, P),
                           (L_n[:, None, None] + t).expand(n, G, R).reshape(n, G * R)], dim=1)  # [n, S]
    slot = (torch.arange(B, device=mask.device) % G)[:, None] * R + t + P  # each response token's column in [n, S]
    source_col = torch.where(t == 0, prompt_lengths[:, None] - 1, slot - 1)
    layout = SharedPrefixLayout(prompt_len=P, response_len=R, group_size=G, positions_Sb=positions.T.contiguous(),
                                prompt_valid_bP=cols[None, :P] < L_n[:, None])
    return {"tokens": packed, "layout": layout, "source_col": source_col, "response_tokens": response_tokens,
            "response_mask": response_mask, "position_index": position_index}


def microbatches(packed: dict, rows_per_microbatch: int) -> list[dict]:
    """Split `pack_groups`' result into micro-batches of whole groups (`rows_per_microbatch` a multiple of G), each
    with `rows` (its slice of the B response rows) and `source_index` (flat indices into its [n_mb * S] logits)."""
    layout = packed["layout"]
    G, S = layout.group_size, packed["tokens"].shape[1]
    if rows_per_microbatch % G:
        raise ValueError(f"micro-batches of {rows_per_microbatch} rows do not hold whole groups of {G}")
    B = packed["source_col"].shape[0]
    out = []
    for start in range(0, B, rows_per_microbatch):
        rows = slice(start, min(start + rows_per_microbatch, B))
        groups = slice(rows.start // G, rows.stop // G)
        local_group = torch.arange(rows.stop - rows.start, device=packed["tokens"].device)[:, None] // G
        out.append({
            "tokens": packed["tokens"][groups], "rows": rows,
            "layout": SharedPrefixLayout(layout.prompt_len, layout.response_len, G, layout.positions_Sb[:, groups],
                                         layout.prompt_valid_bP[groups]),
            "source_index": local_group * S + packed["source_col"][rows],
            "response_tokens": packed["response_tokens"][rows], "response_mask": packed["response_mask"][rows],
            "position_index": packed["position_index"][rows],
        })
    return out
