"""Group advantages and the clipped policy loss against hand-computed numbers; micro-batch invariance; length bias."""

import math

import pytest
import torch

from pipeline.rl.loss import AGGREGATIONS, group_advantages, policy_loss

# ------------------------------------------------------------------------------------------------ advantages


def test_dr_grpo_advantages_are_reward_minus_group_mean():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), 2, std_normalize=False)
    torch.testing.assert_close(adv, torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0]))


def test_grpo_advantages_divide_by_unbiased_group_std():
    # Group [1, 0, 0, 0]: mean 0.25; unbiased std sqrt((0.75^2 + 3 * 0.25^2) / 3) = 0.5 -> A = [1.5, -0.5, -0.5, -0.5].
    # (The population std, 0.433, would give 1.732: the authors' torch .std() is the unbiased one.)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]), 4, std_normalize=True)
    expected = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(adv, expected, rtol=1e-6, atol=1e-6)
    # G = 2: std of [1, 0] is sqrt(0.5), so A = +-0.5 / sqrt(0.5) = +-0.7071.
    adv2 = group_advantages(torch.tensor([1.0, 0.0]), 2, std_normalize=True)
    torch.testing.assert_close(adv2, torch.tensor([math.sqrt(0.5), -math.sqrt(0.5)]), rtol=1e-6, atol=1e-7)


def test_advantage_input_errors():
    with pytest.raises(ValueError, match="divide"):
        group_advantages(torch.zeros(6), 4, std_normalize=False)
    with pytest.raises(ValueError, match="1-D"):
        group_advantages(torch.zeros(2, 4), 4, std_normalize=False)
    with pytest.raises(ValueError, match="group_size >= 2"):
        group_advantages(torch.zeros(4), 1, std_normalize=True)


# ------------------------------------------------------------------------------------- the hand-worked batch
# 2 questions x 2 responses, lengths 1..4, rewards [1, 0 | 0, 1] -> Dr. GRPO advantages [+.5, -.5 | -.5, +.5].
# Ratios r = exp(logp - old_logp) per token, and the token loss max(-A r, -A clip(r, 0.8, 1.2)):
#   resp 0 (A=+.5): r=1.5  -> -0.6 (clipped)
#   resp 1 (A=-.5): r=0.5  -> max(.25, .40) = .40 (clipped); r=1.1 -> .55
#   resp 2 (A=-.5): r=1.0  -> .50; r=1.3 -> max(.65, .60) = .65; r=0.9 -> .45
#   resp 3 (A=+.5): r=0.7  -> max(-.35, -.40) = -.35; r=1.0 -> -.50; r=1.25 -> max(-.625, -.60) = -.60 (clipped);
#                   r=0.9  -> -.45
# Response sums: -0.6, 0.95, 1.6, -1.9 (total 0.05); lengths 1, 2, 3, 4 (10 tokens); 3 clipped tokens.
RATIOS = [[1.5, 0, 0, 0], [0.5, 1.1, 0, 0], [1.0, 1.3, 0.9, 0], [0.7, 1.0, 1.25, 0.9]]
LENGTHS = [1, 2, 3, 4]
MAX_NEW_TOKENS = 8
EXPECTED = {
    "dr_grpo": 0.05 / (MAX_NEW_TOKENS * 4),
    "grpo": (-0.6 / 1 + 0.95 / 2 + 1.6 / 3 - 1.9 / 4) / 4,
    "token_mean": 0.05 / 10,
}


def _hand_batch():
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(4)] for n in LENGTHS])
    old_logp = torch.full((4, 4), -1.0)
    log_ratio = torch.tensor([[math.log(r) if r > 0 else 3.0 for r in row] for row in RATIOS])  # 3.0: padding junk
    logp = (old_logp + log_ratio).requires_grad_(True)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 2, std_normalize=False)
    return logp, old_logp, adv, mask


@pytest.mark.parametrize("aggregation", sorted(EXPECTED))
def test_policy_loss_matches_hand_computation(aggregation):
    logp, old_logp, adv, mask = _hand_batch()
    loss, metrics = policy_loss(logp, old_logp, adv, mask, clip_eps=0.2, aggregation=aggregation,
                                max_new_tokens=MAX_NEW_TOKENS)
    assert loss.item() == pytest.approx(EXPECTED[aggregation], rel=1e-5, abs=1e-7)
    assert metrics["clip_frac"].item() == pytest.approx(3 / 10)
    assert metrics["ratio_max"].item() == pytest.approx(1.5, rel=1e-6)  # the padding's e^3 is masked out
    assert metrics["ratio_mean"].item() == pytest.approx(sum(sum(r) for r in RATIOS) / 10, rel=1e-6)
    assert metrics["num_tokens"].item() == 10
    assert metrics["approx_kl"].item() == pytest.approx(
        sum(r - 1 - math.log(r) for row in RATIOS for r in row if r > 0) / 10, rel=1e-5)
    assert not any(m.requires_grad for m in metrics.values())


def test_dr_grpo_gradient_matches_hand_computation():
    # d loss / d logp = -A r / (max_new_tokens * B) on unclipped tokens; 0 on clipped and padding tokens.
    logp, old_logp, adv, mask = _hand_batch()
    loss, _ = policy_loss(logp, old_logp, adv, mask, clip_eps=0.2, aggregation="dr_grpo", max_new_tokens=MAX_NEW_TOKENS)
    loss.backward()
    clipped = {(0, 0), (1, 0), (3, 2)}
    expected = torch.zeros(4, 4)
    for b, n in enumerate(LENGTHS):
        for t in range(n):
            if (b, t) not in clipped:
                expected[b, t] = -adv[b].item() * RATIOS[b][t] / (MAX_NEW_TOKENS * 4)
    torch.testing.assert_close(logp.grad, expected, rtol=1e-5, atol=1e-8)


def test_k3_kl_to_reference_matches_hand_computation():
    # One response, zero advantage (no policy-gradient term). d = ref - logp = [-0.5, 1.0]:
    # k3 = e^d - 1 - d = [0.1065307, 0.7182818], sum 0.8248125; dr_grpo / (2 tokens budget x 1 response).
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0]])
    k3_sum = (math.exp(-0.5) + 0.5 - 1) + (math.exp(1.0) - 1.0 - 1)
    loss, metrics = policy_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), clip_eps=0.2,
                                aggregation="dr_grpo", max_new_tokens=2, kl_coef=0.1, ref_logp_BT=ref)
    assert loss.item() == pytest.approx(0.1 * k3_sum / 2, rel=1e-6)
    assert metrics["kl_ref"].item() == pytest.approx(k3_sum / 2, rel=1e-6)
    assert metrics["pg_loss"].item() == 0.0


# --------------------------------------------------------------------------------- gradient accumulation


def _random_batch(seed=0, B=6, T=7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([1, 7, 3, 5, 2, 6])[:B]
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    old_logp = -torch.rand(B, T, generator=g) * 3
    theta = (old_logp + 0.3 * torch.randn(B, T, generator=g)).requires_grad_(True)  # several tokens clip
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]), 3, std_normalize=False)
    return theta, old_logp, adv, mask


def _grad(aggregation, splits, *, global_counts):
    theta, old_logp, adv, mask = _random_batch()
    total = 0.0
    for start, stop in splits:
        width = int(mask[start:stop].sum(1).max())  # a micro-batch is padded only to its own longest response
        counts = {"num_responses": 6, "num_tokens": int(mask.sum())} if global_counts else {}
        loss, _ = policy_loss(theta[start:stop, :width], old_logp[start:stop, :width], adv[start:stop],
                              mask[start:stop, :width], clip_eps=0.2, aggregation=aggregation, max_new_tokens=7,
                              **counts)
        total = total + loss
    total.backward()
    return total.detach(), theta.grad


SPLITS = [(0, 2), (2, 5), (5, 6)]


@pytest.mark.parametrize("aggregation", sorted(AGGREGATIONS))
def test_micro_batches_with_global_counts_give_the_unsplit_gradient(aggregation):
    loss_full, grad_full = _grad(aggregation, [(0, 6)], global_counts=False)
    loss_split, grad_split = _grad(aggregation, SPLITS, global_counts=True)
    assert grad_full.abs().sum() > 0 and (grad_full == 0).any()  # non-trivial, and some tokens clipped/masked
    torch.testing.assert_close(loss_split, loss_full, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad_split, grad_full, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("aggregation", ["dr_grpo", "token_mean"])
def test_micro_batches_without_global_counts_do_not(aggregation):
    # The control: each micro-batch normalising by its own size changes the step's gradient.
    _, grad_full = _grad(aggregation, [(0, 6)], global_counts=False)
    _, grad_local = _grad(aggregation, SPLITS, global_counts=False)
    assert not torch.allclose(grad_local, grad_full, rtol=1e-3)


# ------------------------------------------------------------------------------------------------ length bias


def _per_token_grad(aggregation):
    # One question, 4 responses: two right, a short wrong one (2 tokens), a long wrong one (8 tokens).
    lengths = torch.tensor([4, 4, 2, 8])
    mask = (torch.arange(8)[None, :] < lengths[:, None]).float()
    logp = torch.full((4, 8), -1.0, requires_grad=True)
    adv = group_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0]), 4, std_normalize=aggregation == "grpo")
    loss, _ = policy_loss(logp, logp.detach(), adv, mask, clip_eps=0.2, aggregation=aggregation, max_new_tokens=8)
    loss.backward()
    short, long = logp.grad[2, :2], logp.grad[3, :8]
    assert (short > 0).all() and (long > 0).all()  # wrong answers: descent lowers their log-probs
    assert torch.allclose(short, short[0]) and torch.allclose(long, long[0])
    return short[0].item(), long[0].item()


def test_grpo_penalises_a_long_wrong_response_less_per_token():
    short, long = _per_token_grad("grpo")
    assert short == pytest.approx(4 * long)  # 1/|o_i|: 1/2 vs 1/8


def test_dr_grpo_penalises_every_wrong_token_the_same():
    short, long = _per_token_grad("dr_grpo")
    assert short == pytest.approx(long, rel=1e-6)
    assert short == pytest.approx(0.5 / (8 * 4))  # |A| / (max_new_tokens x responses)


# ------------------------------------------------------------------------------------------------ user errors


def test_policy_loss_input_errors():
    logp, old_logp, adv, mask = _hand_batch()
    kwargs = dict(clip_eps=0.2, max_new_tokens=8)
    with pytest.raises(ValueError, match="dr_grpo.*grpo.*token_mean"):
        policy_loss(logp, old_logp, adv, mask, aggregation="seq_mean", **kwargs)
    with pytest.raises(ValueError, match="old_logp_BT has shape"):
        policy_loss(logp, old_logp[:, :3], adv, mask, aggregation="grpo", **kwargs)
    with pytest.raises(ValueError, match="adv_B must have shape"):
        policy_loss(logp, old_logp, adv[:3], mask, aggregation="grpo", **kwargs)
    with pytest.raises(ValueError, match=r"logp_BT must be \[B, T\]"):
        policy_loss(logp[0], old_logp[0], adv, mask[0], aggregation="grpo", **kwargs)
    with pytest.raises(ValueError, match="needs ref_logp_BT"):
        policy_loss(logp, old_logp, adv, mask, aggregation="grpo", kl_coef=0.1, **kwargs)
    with pytest.raises(ValueError, match="max_new_tokens is 3"):
        policy_loss(logp, old_logp, adv, mask, aggregation="dr_grpo", clip_eps=0.2, max_new_tokens=3)
    with pytest.raises(ValueError, match="num_responses"):
        policy_loss(logp, old_logp, adv, mask, aggregation="dr_grpo", num_responses=2, **kwargs)
