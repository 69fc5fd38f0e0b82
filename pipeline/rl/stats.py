"""Per-step rollout statistics: reward, lengths of correct vs incorrect responses, truncation, reward std."""

from __future__ import annotations

import statistics


def rollout_metrics(rollouts, group_size: int) -> dict:
    rewards = [r.reward for r in rollouts]
    lengths = [len(r.response_ids) for r in rollouts]
    correct = [n for n, r in zip(lengths, rollouts) if r.reward > 0]
    incorrect = [n for n, r in zip(lengths, rollouts) if r.reward <= 0]
    stds = [statistics.pstdev(rewards[i : i + group_size]) for i in range(0, len(rewards), group_size)]
    return {
        "rollout/reward_mean": statistics.fmean(rewards),
        "rollout/accuracy": sum(r > 0 for r in rewards) / len(rewards),
        "rollout/response_len_mean": statistics.fmean(lengths),
        "rollout/response_len_correct": statistics.fmean(correct) if correct else float("nan"),
        "rollout/response_len_incorrect": statistics.fmean(incorrect) if incorrect else float("nan"),
        "rollout/truncation_rate": sum(r.truncated for r in rollouts) / len(rollouts),
        "rollout/question_reward_std_mean": statistics.fmean(stds),
        "rollout/zero_std_question_frac": sum(s == 0 for s in stds) / len(stds),
    }
