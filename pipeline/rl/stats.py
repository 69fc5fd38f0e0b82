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


class LearningSignalWatch:
    """Dr. GRPO learns only from groups whose rewards differ: when every group of `patience` steps in a row had one
    reward for all its responses, the advantages, loss and gradients were exactly 0. `update` then returns one line
    saying so, with the likely cause read from the step's metrics (once per such stretch; None otherwise)."""

    def __init__(self, patience: int, template: str, max_new_tokens: int):
        self.patience = patience
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.flat_steps = 0

    def update(self, step: int, record: dict) -> str | None:
        if record["rollout/zero_std_question_frac"] < 1.0:
            self.flat_steps = 0
            return None
        self.flat_steps += 1
        if self.flat_steps != self.patience:
            return None
        return (f"[rl] no learning signal for {self.patience} steps (to step {step}): in every group all responses got "
                f"the same reward, so advantages and gradients are 0. Likely cause: {self._cause(record)}")

    def _cause(self, record: dict) -> str:
        if record["rollout/accuracy"] >= 1.0:
            return "every response is correct: the questions are too easy for this model (use harder ones)"
        if record["rollout/truncation_rate"] >= 0.5:
            return (f"{record['rollout/truncation_rate']:.0%} of responses stop at max_new_tokens="
                    f"{self.max_new_tokens} before answering (reward 0): raise max_new_tokens")
        if record["rollout/no_answer_rate"] >= 0.5:
            return (f"{record['rollout/no_answer_rate']:.0%} of responses give no final answer in the form template="
                    f"{self.template!r} grades (\\boxed{{}}, or <answer> for r1): use the template the model was "
                    "trained with (template=chat for an instruct model), or a system_prompt asking for \\boxed{}")
        return "no response is correct: the questions are too hard for this model (easier ones, or a larger group_size)"
