"""Per-token log-probs and entropy from vocab-parallel logits, without gathering the vocabulary.

Under tensor parallelism each rank holds logits for its slice of the (padded) vocabulary. Max, log-sum-exp and
the target's logit are combined with all-reduces over the TP group (Megatron's vocab_parallel_cross_entropy),
so memory stays at [B, T, V/tp]. Columns past the true vocabulary (padding) are masked out.
"""

from __future__ import annotations

import torch


def _tp_info():
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 1, 0, None
    return ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_group()


def _mask_padding(logits_local: torch.Tensor, vocab_size: int | None) -> torch.Tensor:
    if vocab_size is None:
        return logits_local
    tp, tp_rank, _ = _tp_info()
    shard = logits_local.shape[-1]
    start = tp_rank * shard
    if start + shard <= vocab_size:
        return logits_local
    keep = (torch.arange(start, start + shard, device=logits_local.device) < vocab_size)
    return logits_local.masked_fill(~keep, torch.finfo(logits_local.dtype).min)


def vocab_parallel_logprobs(
    logits_local_BTV: torch.Tensor, target_BT: torch.Tensor, vocab_size: int | None = None
) -> torch.Tensor:
    """log p(target) per position, [B, T], differentiable; logits are this rank's vocab shard (fp32 math)."""
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    logits = _mask_padding(logits_local_BTV.float(), vocab_size)
    tp, _, _ = _tp_info()
    if tp == 1:
        return torch.log_softmax(logits, dim=-1).gather(-1, target_BT.unsqueeze(-1)).squeeze(-1)
    if logits is logits_local_BTV:  # Megatron's kernel works in place on its input
        logits = logits.clone()
    return -vocab_parallel_cross_entropy(logits, target_BT)


def vocab_parallel_entropy(logits_local_BTV: torch.Tensor, vocab_size: int | None = None) -> torch.Tensor:
    """Entropy of the softmax over the full vocabulary per position, [B, T] (no gradient)."""
    import torch.distributed as dist

    with torch.no_grad():
        logits = _mask_padding(logits_local_BTV.float(), vocab_size)
        tp, _, group = _tp_info()
        logits_max = logits.max(dim=-1, keepdim=True).values
        if tp > 1:
            dist.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=group)
        shifted = logits - logits_max
        exp = shifted.exp()
        sum_exp = exp.sum(dim=-1)
        sum_exp_logit = (exp * shifted).sum(dim=-1)
        if tp > 1:
            stacked = torch.stack([sum_exp, sum_exp_logit])
            dist.all_reduce(stacked, group=group)
            sum_exp, sum_exp_logit = stacked[0], stacked[1]
        return sum_exp.log() - sum_exp_logit / sum_exp


def vocab_parallel_logprobs_and_entropy(
    logits_local_BTV: torch.Tensor, target_BT: torch.Tensor, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """`vocab_parallel_logprobs` (differentiable) and `vocab_parallel_entropy` (no gradient) of the same logits;
    one log-softmax serves both when the vocabulary is not split (three passes over [B, T, V] fewer)."""
    tp, _, _ = _tp_info()
    if tp > 1:
        return (vocab_parallel_logprobs(logits_local_BTV, target_BT, vocab_size),
                vocab_parallel_entropy(logits_local_BTV, vocab_size))
    logp_all = torch.log_softmax(_mask_padding(logits_local_BTV.float(), vocab_size), dim=-1)
    with torch.no_grad():
        logp_detached = logp_all.detach()
        entropy = -torch.linalg.vecdot(logp_detached.exp(), logp_detached)
    return logp_all.gather(-1, target_BT.unsqueeze(-1)).squeeze(-1), entropy
