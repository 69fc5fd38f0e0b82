"""One switch per algorithm (dr_grpo / grpo / token_mean) against hand-computed losses; truncated importance
sampling against hand-computed weights; the authors' update schedule (8 optimizer steps per rollout) makes the PPO
ratio leave 1 and the clip act, where one step per rollout is on-policy."""

import math

import pytest
import torch
from conftest import read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

from pipeline.rl.config import ALGORITHMS, RLConfig
from pipeline.rl.loss import group_advantages, policy_loss, tis_weights


def _loss(cfg: RLConfig, rewards, logp, old, mask, max_new_tokens=4):
    adv = group_advantages(torch.tensor(rewards), 2, std_normalize=cfg.std_normalize)
    loss, _ = policy_loss(torch.tensor(logp), torch.tensor(old), adv, torch.tensor(mask), clip_eps=0.2,
                          aggregation=cfg.aggregation, max_new_tokens=max_new_tokens)
    return adv, loss.item()


def test_each_algorithm_is_the_papers_formula():
    # two questions x 2 responses; response lengths 2, 1, 3, 2; on-policy (ratio 1): token loss = -A
    rewards = [1.0, 0.0, 1.0, 1.0]
    logp = [[-1.0, -2.0, 0.0], [-1.0, 0.0, 0.0], [-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]]
    mask = [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]]
    mask = [[bool(m) for m in row] for row in mask]
    # Dr. GRPO: A = R - mean = [0.5, -0.5, 0, 0]; sum of token losses / max_new_tokens (4), mean over responses
    adv, loss = _loss(RLConfig(algorithm="dr_grpo"), rewards, logp, logp, mask)
    assert adv.tolist() == [0.5, -0.5, 0.0, 0.0]
    assert loss == pytest.approx((-0.5 * 2 + 0.5 * 1) / 4 / 4)
    # GRPO: A / (std + 1e-8) with the unbiased std of (1, 0) = 0.7071; per-response token mean, mean over responses
    adv, loss = _loss(RLConfig(algorithm="grpo"), rewards, logp, logp, mask)
    a = 0.5 / (math.sqrt(0.5) + 1e-8)
    assert adv.tolist() == pytest.approx([a, -a, 0.0, 0.0])
    assert loss == pytest.approx((-a * 2 / 2 + a * 1 / 1) / 4)
    # token_mean (DAPO): GRPO's advantages, all token losses / the step's tokens (8)
    adv, loss = _loss(RLConfig(algorithm="token_mean"), rewards, logp, logp, mask)
    assert loss == pytest.approx((-a * 2 + a * 1) / 8)


def test_algorithm_sets_both_knobs_and_a_mix_is_named_an_ablation():
    for name, (aggregation, std_normalize) in ALGORITHMS.items():
        cfg = RLConfig(algorithm=name)
        assert (cfg.aggregation, cfg.std_normalize, cfg.ablation()) == (aggregation, std_normalize, None)
    assert "an ablation" in RLConfig(algorithm="dr_grpo", std_normalize=True).ablation()
    assert "but algorithm='grpo'" in RLConfig(algorithm="dr_grpo", aggregation="grpo", std_normalize=True).ablation()
    cfg = RLConfig.from_dict({"algorithm": "grpo"})  # what a JSON config or the CLI gives
    assert (cfg.aggregation, cfg.std_normalize) == ("grpo", True)
    with pytest.raises(ValueError, match=r"algorithm='ppo'; valid: \['dr_grpo', 'grpo', 'token_mean'\]"):
        RLConfig(model_dir="m", train_questions="q", algorithm="ppo").validate(1, check_files=False)
    with pytest.raises(ValueError, match="std_normalize='false' must be true or false"):
        RLConfig(model_dir="m", train_questions="q", std_normalize="false").validate(1, check_files=False)
    for field in ("bf16", "grad_reduce_in_fp32", "trim_microbatch_padding", "shared_prompt_update"):
        with pytest.raises(ValueError, match=f"{field}='false' must be true or false"):
            RLConfig(model_dir="m", train_questions="q", **{field: "false"}).validate(1, check_files=False)


def test_truncated_importance_sampling_weights_each_tokens_surrogate():
    behaviour = torch.tensor([[-1.0, -2.0, -0.5]])
    engine = torch.tensor([[-1.5, -1.0, -0.5]])
    weights = tis_weights(behaviour, engine, cap=1.5)
    assert weights[0].tolist() == pytest.approx([1.5, math.exp(-1.0), 1.0])  # e^0.5 = 1.65 capped at 1.5
    logp, adv, mask = torch.tensor([[-0.9, -2.1, -0.5]]), torch.tensor([2.0]), torch.ones(1, 3, dtype=torch.bool)
    loss, _ = policy_loss(logp, behaviour, adv, mask, clip_eps=0.2, aggregation="token_mean", max_new_tokens=3,
                          token_weight_BT=weights)
    ratio = torch.exp(logp - behaviour)
    surrogate = torch.maximum(-2.0 * ratio, -2.0 * ratio.clamp(0.8, 1.2))
    assert loss.item() == pytest.approx((surrogate * weights).sum().item() / 3)
    with pytest.raises(ValueError, match="cap must be > 0"):
        tis_weights(behaviour, engine, cap=0.0)


@pytest.mark.multirank
def test_the_authors_schedule_makes_the_ratio_and_clip_act(tmp_path):
    hf_dir = save_random_llama(tmp_path / "hf", tiny_llama_config(num_layers=2), seed=9)
    run_torchrun("tests/dist/update_schedule_worker.py", 1, hf_dir, tmp_path)
    r = read_rank_results(tmp_path, 1)[0]
    one, eight, tis = r["minibatches_1"], r["minibatches_8"], r["minibatches_8_tis"]
    assert one["train/approx_kl"] == 0 and one["train/clip_frac"] == 0  # on-policy: ratio exactly 1
    assert eight["train/approx_kl"] > 1e-4 and eight["train/clip_frac"] > 0  # steps 2..8 see a moved policy
    # the engine's log-probs are the learner's minus 0.3 on every other token: the mismatch is seen exactly
    assert eight["train/logp_mismatch_max"] == pytest.approx(0.3, abs=1e-5)
    assert eight["train/logp_mismatch_p99"] == pytest.approx(0.3, abs=1e-5)
    assert eight["train/tis_truncated_frac"] == 0 and 0.4 < tis["train/tis_truncated_frac"] < 0.6
    assert tis["train/loss"] != pytest.approx(eight["train/loss"], rel=1e-3)
