"""Group advantages and the clipped policy-gradient loss of GRPO / Dr. GRPO (arXiv 2503.20783), in plain torch.

Only per-token log-probs go in (no logits), so the learner can hand over vocab-parallel log-probs computed
under tensor parallelism. Shapes: B responses, T response tokens (right-padded; ``mask_BT`` marks real ones).

Gradient accumulation: the learner splits an optimizer step's responses into micro-batches and *sums* the
micro-batch losses. Pass ``num_responses`` (responses in the whole step) and, for ``token_mean``,
``num_tokens`` (response tokens in the whole step): every aggregation is then a sum over micro-batches of
already globally normalised terms, and the step's gradient does not depend on how the batch was split.
Under data parallelism, pass the counts over all data-parallel ranks if gradients are summed across ranks,
or the rank-local counts if they are averaged (Megatron's DDP averages by default).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

LOG_RATIO_CLAMP = 40.0
"""k3's log-ratio is clamped to +-this before ``exp`` (as oat does) so one extreme token cannot overflow."""


def group_advantages(rewards_B: Tensor, group_size: int, *, std_normalize: bool) -> Tensor:
    """``A_i = R_i - mean_j R_j`` over each question's ``group_size`` contiguous responses (Dr. GRPO);
    with ``std_normalize`` (GRPO) also divided by ``std_j R_j + 1e-8``, the unbiased (n - 1) std as in the
    authors' ``rewards.view(-1, G).std(dim=1)``. Returns float32 ``adv_B``, no gradient."""
    if rewards_B.dim() != 1:
        raise ValueError(f"rewards_B must be 1-D (one reward per response), got shape {tuple(rewards_B.shape)}")
    if group_size < 1 or rewards_B.numel() % group_size:
        raise ValueError(f"group_size {group_size} must be >= 1 and divide the number of responses "
                         f"({rewards_B.numel()}); responses of one question must be contiguous")
    if std_normalize and group_size < 2:
        raise ValueError("std_normalize needs group_size >= 2 (the std of one sample is undefined); "
                         "use std_normalize=False (Dr. GRPO) or sample more responses per question")
    rewards_QG = rewards_B.detach().float().view(-1, group_size)
    adv_QG = rewards_QG - rewards_QG.mean(dim=1, keepdim=True)
    if std_normalize:
        adv_QG = adv_QG / (rewards_QG.std(dim=1, keepdim=True, unbiased=True) + 1e-8)
    return adv_QG.reshape(-1)


# Each aggregation maps masked per-token losses to this call's share of the step loss.
# Arguments: (loss_BT, mask_BT as float, num_responses, num_tokens, max_new_tokens).
Aggregation = Callable[[Tensor, Tensor, int, float, int], Tensor]


def _dr_grpo(loss_BT: Tensor, mask_BT: Tensor, num_responses: int, num_tokens: float, max_new_tokens: int) -> Tensor:
    """Sum of each response's token losses / the constant generation budget, mean over responses."""
    return (loss_BT * mask_BT).sum() / (max_new_tokens * num_responses)


def _grpo(loss_BT: Tensor, mask_BT: Tensor, num_responses: int, num_tokens: float, max_new_tokens: int) -> Tensor:
    """Each response's token mean (divided by its own length |o_i|: the length bias), mean over responses."""
    per_response_B = (loss_BT * mask_BT).sum(dim=1) / mask_BT.sum(dim=1).clamp(min=1.0)
    return per_response_B.sum() / num_responses


def _token_mean(loss_BT: Tensor, mask_BT: Tensor, num_responses: int, num_tokens: float, max_new_tokens: int) -> Tensor:
    """Sum of all token losses / number of tokens in the step (DAPO)."""
    return (loss_BT * mask_BT).sum() / max(num_tokens, 1.0)


AGGREGATIONS: dict[str, Aggregation] = {
    "dr_grpo": _dr_grpo,
    "grpo": _grpo,
    "token_mean": _token_mean,
}


def get_aggregation(name: str) -> Aggregation:
    try:
        return AGGREGATIONS[name]
    except KeyError:
        raise ValueError(f"unknown loss aggregation {name!r}; valid names: {sorted(AGGREGATIONS)}") from None


def _check_shapes(logp_BT: Tensor, old_logp_BT: Tensor, adv_B: Tensor, mask_BT: Tensor,
                  ref_logp_BT: Tensor | None) -> None:
    if logp_BT.dim() != 2 or 0 in logp_BT.shape:
        raise ValueError(f"logp_BT must be [B, T] per-token log-probs with B, T >= 1, got shape {tuple(logp_BT.shape)}")
    named = {"old_logp_BT": old_logp_BT, "mask_BT": mask_BT}
    if ref_logp_BT is not None:
        named["ref_logp_BT"] = ref_logp_BT
    for name, tensor in named.items():
        if tensor.shape != logp_BT.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected logp_BT's {tuple(logp_BT.shape)}")
    if adv_B.shape != (logp_BT.shape[0],):
        raise ValueError(f"adv_B must have shape ({logp_BT.shape[0]},) (one advantage per response), "
                         f"got {tuple(adv_B.shape)}")


def policy_loss(
    logp_BT: Tensor,
    old_logp_BT: Tensor,
    adv_B: Tensor,
    mask_BT: Tensor,
    *,
    clip_eps: float,
    aggregation: str,
    max_new_tokens: int,
    kl_coef: float = 0.0,
    ref_logp_BT: Tensor | None = None,
    num_responses: int | None = None,
    num_tokens: int | float | None = None,
    check_lengths: bool = True,
    token_weight_BT: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate per token, ``max(-A r, -A clip(r, 1 - eps, 1 + eps))`` with ``r = exp(logp - old_logp)``
    against the behaviour (rollout) log-probs, aggregated by ``aggregation`` (``AGGREGATIONS``), plus
    ``kl_coef`` x the k3 estimate of KL(policy || reference) aggregated the same way (as oat does).

    Returns (loss, metrics). Metrics are detached scalars over this call's masked tokens:
    ``pg_loss`` (this call's share, no KL), ``clip_frac`` (tokens where the clipped branch is taken),
    ``approx_kl`` (k3 estimate of KL(behaviour || policy): mean of ``(r - 1) - log r``, >= 0),
    ``ratio_mean``, ``ratio_max``, ``num_tokens``, and with a reference ``kl_ref`` (mean k3 to the reference).
    ``check_lengths=False`` skips the check that no response exceeds ``max_new_tokens`` (a device -> host sync), for
    callers that checked the whole step once (the learner). ``token_weight_BT`` multiplies each token's clipped
    surrogate (not the KL term) before aggregation: truncated importance-sampling weights (``tis_weights``).
    """
    aggregate = get_aggregation(aggregation)
    _check_shapes(logp_BT, old_logp_BT, adv_B, mask_BT, ref_logp_BT)
    if not clip_eps > 0:
        raise ValueError(f"clip_eps must be > 0 (the paper uses 0.2), got {clip_eps}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be the generation budget (>= 1), got {max_new_tokens}")
    if kl_coef < 0 or (kl_coef > 0 and ref_logp_BT is None):
        raise ValueError(f"kl_coef={kl_coef}: must be >= 0, and > 0 needs ref_logp_BT (reference-policy log-probs)")
    mask_BT = mask_BT.to(torch.float32)
    lengths_B = mask_BT.sum(dim=1)
    local_tokens = lengths_B.sum()
    if check_lengths and aggregation == "dr_grpo" and lengths_B.max().item() > max_new_tokens:
        raise ValueError(f"a response has {int(lengths_B.max().item())} tokens in mask_BT but max_new_tokens is "
                         f"{max_new_tokens}; pass the generation budget and mask only response tokens")
    num_responses = logp_BT.shape[0] if num_responses is None else num_responses
    num_tokens = local_tokens.item() if num_tokens is None else float(num_tokens)
    if num_responses < logp_BT.shape[0]:
        raise ValueError(f"num_responses ({num_responses}) counts the whole optimizer step and cannot be below "
                         f"this micro-batch's {logp_BT.shape[0]} responses")

    logp_BT = logp_BT.float()
    old_logp_BT = old_logp_BT.detach().float()
    adv_BT = adv_B.detach().float().unsqueeze(1)
    log_ratio_BT = logp_BT - old_logp_BT
    ratio_BT = torch.exp(log_ratio_BT)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * torch.clamp(ratio_BT, 1.0 - clip_eps, 1.0 + clip_eps)
    surrogate_BT = torch.maximum(unclipped_BT, clipped_BT)
    if token_weight_BT is not None:
        surrogate_BT = surrogate_BT * token_weight_BT.detach().float()
    pg_loss = aggregate(surrogate_BT, mask_BT, num_responses, num_tokens, max_new_tokens)
    loss = pg_loss

    def masked_mean(values_BT: Tensor) -> Tensor:
        return (values_BT * mask_BT).sum() / local_tokens.clamp(min=1.0)

    with torch.no_grad():
        metrics = {
            "pg_loss": pg_loss.detach(),
            "clip_frac": masked_mean((clipped_BT > unclipped_BT).float()),
            "approx_kl": masked_mean(torch.expm1(log_ratio_BT) - log_ratio_BT),
            "ratio_mean": masked_mean(ratio_BT),
            "ratio_max": torch.where(mask_BT > 0, ratio_BT, torch.zeros_like(ratio_BT)).max(),
            "num_tokens": local_tokens.detach(),
        }
    if ref_logp_BT is not None:
        ref_log_ratio_BT = (ref_logp_BT.detach().float() - logp_BT).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        k3_BT = torch.expm1(ref_log_ratio_BT) - ref_log_ratio_BT
        if kl_coef > 0:
            loss = loss + kl_coef * aggregate(k3_BT, mask_BT, num_responses, num_tokens, max_new_tokens)
        metrics["kl_ref"] = masked_mean(k3_BT.detach())
    return loss, metrics


def tis_weights(behaviour_logp_BT: Tensor, sampler_logp_BT: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights min(pi_behaviour / pi_sampler, cap) per token: the learner's own
    behaviour log-probs against the rollout engine's (which samples with other kernels / precision), as oat's
    ``tis_c`` (``exp(logps - actor_logps).clamp(max=tis_c)`` multiplying the clipped surrogate)."""
    if not cap > 0:
        raise ValueError(f"the truncated importance-sampling cap must be > 0, got {cap}")
    return torch.exp(behaviour_logp_BT.detach().float() - sampler_logp_BT.detach().float()).clamp(max=cap)
