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


def vocab_parallel_logprobs_and_entropy_chunked(
    logits_local_BTV: torch.Tensor,
    target_BT: torch.Tensor,
    vocab_size: int | None = None,
    *,
    chunk_tokens: int = 4096,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`vocab_parallel_logprobs_and_entropy` of `logits / temperature`, without an fp32 copy of [B, T, V] at once.

    The B*T positions are processed `chunk_tokens` at a time: each chunk is cast to fp32, divided by the
    temperature and masked (padding columns) on its own, so fp32 memory is [chunk_tokens, V/tp] and the logits are
    never scaled as a whole. Backward recomputes each chunk's softmax from the saved logits (their own dtype) and the
    per-position max and log-sum-exp, and writes the gradient into one buffer of the logits' dtype and shape.

    Returns `logp_BT` (fp32, differentiable w.r.t. the logits) and `entropy_BT` (fp32, no gradient), shaped as the
    logits' leading dimensions; float64 logits are computed and returned in float64 (for gradcheck). `temperature`
    divides the logits inside each chunk: pass the raw logits, not `logits / temperature`. Under tensor parallelism
    the max, sum-exp and target logit are combined with all-reduces over the TP group, as in the unchunked functions;
    backward needs no collective.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be a positive number of positions, got {chunk_tokens}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 for log-probs (got {temperature}); greedy decoding has none")
    if target_BT.shape != logits_local_BTV.shape[:-1]:
        raise ValueError(f"target shape {tuple(target_BT.shape)} must equal the logits' leading dimensions "
                         f"{tuple(logits_local_BTV.shape[:-1])}")
    return _ChunkedLogprobsEntropy.apply(logits_local_BTV, target_BT, vocab_size, chunk_tokens, float(temperature))


def _scaled_chunk(
    logits_BTV: torch.Tensor, start: int, stop: int, temperature: float, keep_V: torch.Tensor | None
) -> torch.Tensor:
    """Logits / temperature of positions [start, stop) of the flattened leading dimensions, [stop - start, V], in fp32
    (float64 stays float64), padding columns at the dtype's lowest value. Always a new tensor, never a view of the
    logits, so callers may work on it in place; logits that cannot be flattened without a copy (the learner's
    `logits[:, :-1]`) are gathered row by row, so no copy of the whole tensor is made either way."""
    compute_dtype = torch.promote_types(logits_BTV.dtype, torch.float32)
    try:
        flat_NV = logits_BTV.view(-1, logits_BTV.shape[-1])
    except (RuntimeError, ValueError):  # strides that do not merge (FakeTensorMode raises ValueError)
        flat_NV = None
    if flat_NV is not None:
        x_NV = flat_NV[start:stop].to(compute_dtype, copy=True)
    else:
        flat_N = torch.arange(start, stop, device=logits_BTV.device)
        x_NV = logits_BTV[torch.unravel_index(flat_N, logits_BTV.shape[:-1])].to(compute_dtype)
    if temperature != 1.0:
        x_NV.div_(temperature)
    if keep_V is not None:
        x_NV.masked_fill_(~keep_V, torch.finfo(compute_dtype).min)
    return x_NV


class _ChunkedLogprobsEntropy(torch.autograd.Function):
    """Chunked log p(target) and entropy over vocab-parallel logits; see `vocab_parallel_logprobs_and_entropy_chunked`.

    Saves the logits as given, the flat targets, and per position the fp32 max and log-sum-exp of the shifted logits
    (scaled, masked, over the whole vocabulary: already all-reduced), so backward needs no collective."""

    @staticmethod
    def forward(ctx, logits_local_BTV, target_BT, vocab_size, chunk_tokens, temperature):
        import torch.distributed as dist

        tp, tp_rank, group = _tp_info()
        device, shard = logits_local_BTV.device, logits_local_BTV.shape[-1]
        vocab_start = tp_rank * shard
        keep_V = None
        if vocab_size is not None and vocab_start + shard > vocab_size:
            keep_V = torch.arange(vocab_start, vocab_start + shard, device=device) < vocab_size
        target_N = target_BT.reshape(-1)
        num_positions = target_N.numel()
        compute_dtype = torch.promote_types(logits_local_BTV.dtype, torch.float32)
        logp_N = torch.empty(num_positions, dtype=compute_dtype, device=device)
        entropy_N = torch.empty_like(logp_N)
        max_N, log_sum_exp_N = torch.empty_like(logp_N), torch.empty_like(logp_N)
        for start in range(0, num_positions, chunk_tokens):
            stop = min(start + chunk_tokens, num_positions)
            x_NV = _scaled_chunk(logits_local_BTV, start, stop, temperature, keep_V)
            chunk_max_N = x_NV.max(dim=-1).values
            if tp > 1:
                dist.all_reduce(chunk_max_N, op=dist.ReduceOp.MAX, group=group)
            shifted_NV = x_NV.sub_(chunk_max_N.unsqueeze(-1))
            local_target_N = target_N[start:stop] - vocab_start
            in_shard_N = (local_target_N >= 0) & (local_target_N < shard)
            target_shifted_N = shifted_NV.gather(-1, local_target_N.clamp(0, shard - 1).unsqueeze(-1)).squeeze(-1)
            target_shifted_N = target_shifted_N.masked_fill(~in_shard_N, 0.0)
            exp_NV = shifted_NV.exp()
            sum_exp_N = exp_NV.sum(dim=-1)
            sum_exp_shifted_N = exp_NV.mul_(shifted_NV).sum(dim=-1)  # in place: two chunk-sized tensors at most
            del exp_NV, shifted_NV, x_NV
            # [sum exp, sum exp * shifted, target's shifted logit] in one all-reduce
            sums_3N = torch.stack([sum_exp_N, sum_exp_shifted_N, target_shifted_N])
            if tp > 1:
                dist.all_reduce(sums_3N, group=group)
            sum_exp_N, sum_exp_shifted_N, target_shifted_N = sums_3N.unbind(0)
            chunk_log_sum_exp_N = sum_exp_N.log()
            logp_N[start:stop] = target_shifted_N - chunk_log_sum_exp_N
            entropy_N[start:stop] = chunk_log_sum_exp_N - sum_exp_shifted_N / sum_exp_N
            max_N[start:stop], log_sum_exp_N[start:stop] = chunk_max_N, chunk_log_sum_exp_N
        ctx.save_for_backward(logits_local_BTV, target_N, max_N, log_sum_exp_N)
        ctx.keep_V, ctx.vocab_start, ctx.chunk_tokens, ctx.temperature = keep_V, vocab_start, chunk_tokens, temperature
        lead = logits_local_BTV.shape[:-1]
        entropy_BT = entropy_N.view(lead)
        ctx.mark_non_differentiable(entropy_BT)
        return logp_N.view(lead), entropy_BT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_logp_BT, _grad_entropy_BT):
        logits_local_BTV, target_N, max_N, log_sum_exp_N = ctx.saved_tensors
        temperature, keep_V, vocab_start = ctx.temperature, ctx.keep_V, ctx.vocab_start
        shard = logits_local_BTV.shape[-1]
        # d logp / d logits = (onehot(target) - softmax) / temperature; padding columns get softmax 0, so gradient 0
        scale_N = grad_logp_BT.reshape(-1).to(max_N.dtype) / temperature
        grad_logits_BTV = torch.empty(
            logits_local_BTV.shape, dtype=logits_local_BTV.dtype, device=logits_local_BTV.device)
        grad_NV = grad_logits_BTV.view(-1, shard)
        for start in range(0, target_N.numel(), ctx.chunk_tokens):
            stop = min(start + ctx.chunk_tokens, target_N.numel())
            x_NV = _scaled_chunk(logits_local_BTV, start, stop, temperature, keep_V)
            # softmax = exp((x - max) - log sum exp(x - max)), rounded as in forward; in place on the chunk's copy
            softmax_NV = x_NV.sub_(max_N[start:stop].unsqueeze(-1)).sub_(log_sum_exp_N[start:stop].unsqueeze(-1)).exp_()
            scale_chunk_N = scale_N[start:stop]
            chunk_grad_NV = softmax_NV.mul_(-scale_chunk_N.unsqueeze(-1))
            local_target_N = target_N[start:stop] - vocab_start
            in_shard_N = (local_target_N >= 0) & (local_target_N < shard)
            chunk_grad_NV.scatter_add_(
                -1, local_target_N.clamp(0, shard - 1).unsqueeze(-1),
                scale_chunk_N.masked_fill(~in_shard_N, 0.0).unsqueeze(-1))
            grad_NV[start:stop] = chunk_grad_NV
            del x_NV, softmax_NV, chunk_grad_NV  # one chunk alive at a time (these three are one tensor)
        return grad_logits_BTV, None, None, None, None
