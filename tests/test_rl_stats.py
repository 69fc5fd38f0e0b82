"""Rollout statistics and the console's no-learning-signal warning, on hand-made rollouts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from pipeline.rl.stats import LearningSignalWatch, rollout_metrics


def _rollouts(rewards, lengths=None, truncated=None):
    lengths = lengths or [4] * len(rewards)
    truncated = truncated or [False] * len(rewards)
    return [SimpleNamespace(reward=r, response_ids=[0] * n, truncated=t) for r, n, t in zip(rewards, lengths, truncated)]


def test_rollout_metrics_by_hand():
    m = rollout_metrics(_rollouts([1.0, 0.0, 0.0, 0.0], lengths=[2, 4, 6, 8], truncated=[False, False, False, True]),
                        group_size=2)
    assert m["rollout/reward_mean"] == 0.25 and m["rollout/accuracy"] == 0.25
    assert m["rollout/response_len_correct"] == 2 and m["rollout/response_len_incorrect"] == 6
    assert m["rollout/truncation_rate"] == 0.25
    assert m["rollout/question_reward_std_mean"] == 0.25  # groups (1, 0): std 0.5; (0, 0): 0
    assert m["rollout/zero_std_question_frac"] == 0.5
    assert math.isnan(rollout_metrics(_rollouts([0.0, 0.0]), 2)["rollout/response_len_correct"])


def _record(accuracy=0.0, truncation=0.0, no_answer=0.0, flat=1.0):
    return {"rollout/zero_std_question_frac": flat, "rollout/accuracy": accuracy, "rollout/truncation_rate": truncation,
            "rollout/no_answer_rate": no_answer}


@pytest.mark.parametrize("record,cause", [
    (_record(no_answer=1.0), "no final answer in the form template='none' grades"),
    (_record(truncation=0.8, no_answer=0.2), "80% of responses stop at max_new_tokens=16"),
    (_record(accuracy=1.0), "every response is correct"),
    (_record(no_answer=0.1), "no response is correct"),
])
def test_no_learning_signal_is_said_once_after_patience_steps_with_its_cause(record, cause):
    watch = LearningSignalWatch(patience=3, template="none", max_new_tokens=16)
    said = [watch.update(step, record) for step in range(1, 7)]
    assert said[:2] == [None, None] and said[3:] == [None, None, None]  # once per stretch
    assert "no learning signal for 3 steps (to step 3)" in said[2] and cause in said[2], said[2]


def test_a_step_with_signal_restarts_the_count():
    watch = LearningSignalWatch(patience=2, template="none", max_new_tokens=16)
    flat, learning = _record(no_answer=1.0), _record(flat=0.5)
    assert [watch.update(s, r) for s, r in enumerate([flat, learning, flat], 1)] == [None, None, None]
    assert watch.update(4, flat) is not None  # two flat steps in a row again

