"""The math reward: equivalences, non-equivalences, template-aware extraction, and hostile model output.

Equivalence tests describe the project's own "lenient" verifier (the authors' "fast" / "math_verify" are tested
against their grader in test_verifiers.py); hostile output is tried under every verifier.
Graded through real worker processes. ``GRADE_LIMIT_S`` is the grader's hard functional limit per answer
(not a speed benchmark): every hostile input must come back, scored 0, within it.
"""

import functools
import os
import threading
import time

import pytest

from pipeline.rl.grading import EQUIVALENCE_STAGES, VERIFIERS, is_equivalent, normalize_answer, sympy_equal
from pipeline.rl.reward import GraderConfig, RewardGrader
from pipeline.rl.reward import math_reward as _math_reward

pytestmark = pytest.mark.workers

math_reward = functools.partial(_math_reward, verifier="lenient")

GRADE_LIMIT_S = 2.0


@pytest.fixture(scope="module")
def grader():
    with RewardGrader(num_workers=2, timeout_s=1.0, verifier="lenient") as pool:
        yield pool


EQUIVALENT = [  # (model answer, gold answer)
    ("0.5", "1/2"),
    ("1/2", "\\frac{1}{2}"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt3"),
    ("10 \\text{ cm}", "10"),
    ("5 \\text{ ways}", "5"),
    ("30^\\circ", "30"),
    ("50\\%", "50"),
    ("\\$1,000", "1000"),
    ("3.00", "3"),
    ("x = 3", "3"),
    ("\\left( 1, 2 \\right]", "(1,2]"),
    ("(-\\infty, 3) \\cup (4, \\infty)", "(-\\infty,3)\\cup(4,\\infty)"),
    ("\\{2, 1\\}", "\\{1,2\\}"),
    ("2, 1", "1, 2"),
    ("(x+1)^2", "x^2+2x+1"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("\\sqrt[3]{8}", "2"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
    ("\\text{(B)}", "B"),
]

NOT_EQUIVALENT = [
    ("3", "4"),
    ("2", "1/2"),
    ("0.333", "1/3"),
    ("(1,2)", "[1,2)"),
    ("\\{1, 2\\}", "\\{1, 3\\}"),
    ("2\\sqrt{3}", "\\sqrt{8}"),
    ("x^2", "2x"),
    ("-5", "5"),
    ("1, 2", "1, 2, 3"),
]


def _boxed(answer: str) -> str:
    return f"Let me think step by step. ... So the answer is \\boxed{{{answer}}}."


def test_equivalent_answers_score_one(grader):
    rewards, stats = grader.grade_batch([_boxed(p) for p, _ in EQUIVALENT], [g for _, g in EQUIVALENT], "qwen_math")
    wrong = [pair for pair, r in zip(EQUIVALENT, rewards) if r != 1.0]
    assert not wrong, f"scored 0: {wrong}"
    assert stats["grading_failures"] == stats["grading_timeouts"] == 0


def test_non_equivalent_answers_score_zero(grader):
    rewards, stats = grader.grade_batch([_boxed(p) for p, _ in NOT_EQUIVALENT], [g for _, g in NOT_EQUIVALENT],
                                        "qwen_math")
    wrong = [pair for pair, r in zip(NOT_EQUIVALENT, rewards) if r != 0.0]
    assert not wrong, f"scored 1: {wrong}"
    assert stats["grading_failures"] == stats["grading_timeouts"] == 0


@pytest.mark.parametrize("pred,gold,wrong", [
    ("0.5", "1/2", "1/3"), ("\\dfrac{1}{2}", "0.5", "0.25"), ("2\\sqrt{2}", "\\sqrt{8}", "\\sqrt{6}"),
    ("\\{2,1\\}", "\\{1,2\\}", "\\{1,2,3\\}"), ("[2, 5)", "[2,5)", "[2,5]"), ("(x+1)^2", "x^2+2x+1", "x^2+1"),
])
def test_sympy_stage_alone(pred, gold, wrong):
    assert sympy_equal(pred, gold)
    assert not sympy_equal(pred, wrong)


def test_normalisation():
    assert normalize_answer("$\\dfrac{1}{2}$") == normalize_answer("\\frac12") == "\\frac{1}{2}"
    assert normalize_answer("\\left(1,2\\right)") == "(1,2)"
    assert normalize_answer("x = 3") == normalize_answer("3.0") == normalize_answer("3") == "3"
    assert normalize_answer("10\\text{ cm}") == normalize_answer("10 cm") == "10"
    assert normalize_answer("{{5}}") == "5"
    assert normalize_answer("3") != normalize_answer("30")


def test_gold_answer_may_be_a_boxed_solution(grader):
    rewards, _ = grader.grade_batch([_boxed("0.5"), _boxed("2")], ["so it is $\\boxed{\\frac{1}{2}}$."] * 2, "none")
    assert rewards == [1.0, 0.0]
    rewards, _ = grader.grade_batch([_boxed("12"), _boxed("12.0"), _boxed("1.5")], [12, 12, 1.5], "none")
    assert rewards == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("gold", ["", "  ", None])
def test_a_missing_gold_answer_is_refused_not_rewarded(grader, gold):
    """An empty box equals an empty gold answer in the authors' verifiers: a reward for nothing."""
    with pytest.raises(ValueError, match=r"gold answer missing \(None or blank\) for response\(s\) \[1\]"):
        grader.grade_batch(["\\boxed{2}", "\\boxed{}"], ["2", gold], "r1")


def test_truncated_responses_score_zero(grader):
    rewards, stats = grader.grade_batch([_boxed("4")] * 2, ["4"] * 2, "qwen_math", truncated=[True, False])
    assert rewards == [0.0, 1.0]
    assert stats["truncated"] == 1
    assert math_reward(_boxed("4"), "4", "qwen_math", truncated=True) == 0.0


def test_template_aware_extraction(grader):
    response = "<think> maybe \\boxed{5} ... no. </think> <answer> 3 </answer>"
    rewards, _ = grader.grade_batch([response] * 4, ["3", "5", "3", "5"], "r1")
    assert rewards == [1.0, 0.0, 1.0, 0.0]
    rewards, _ = grader.grade_batch([response] * 2, ["3", "5"], "qwen_math")  # the last box
    assert rewards == [0.0, 1.0]
    rewards, _ = grader.grade_batch([response] * 2, ["3", "5"], "none")
    assert rewards == [0.0, 1.0]
    boxed_in_tag = "<think> ... </think> <answer> the answer is \\boxed{\\frac{1}{2}} </answer>"
    no_tag = "<think> the answer is \\boxed{3} </think>"
    rewards, stats = grader.grade_batch([boxed_in_tag, no_tag], ["0.5", "3"], "r1")
    assert rewards == [1.0, 0.0]
    assert stats["no_answer"] == 1
    with pytest.raises(ValueError, match="valid names"):
        grader.grade_batch([response], ["3"], "llama_chat")


def _hostile_cases(marker: str) -> list[tuple[str, str, str, str]]:
    """(name, response, gold, template): all must score 0 without executing anything."""
    inject = f"__import__('os').system('touch {marker}')"
    return [
        ("injection in box", f"\\boxed{{{inject}}}", "1", "qwen_math"),
        ("injection vs near-identical gold", f"\\boxed{{{inject}}}", inject.replace("'", '"'), "qwen_math"),
        ("injection in answer tag", f"<think>x</think> <answer>{inject}</answer>", "1", "r1"),
        ("injection in text", f"{inject}; eval(compile('import os', 'x', 'exec')) \\boxed{{2}}", "1", "none"),
        ("sympify bait", "\\boxed{(lambda: __import__('os').system('touch " + marker + "'))()}", "1", "none"),
        ("power tower", "\\boxed{9^{9^{9^{9}}}}", "1", "qwen_math"),
        ("python power tower", "\\boxed{9**9**9**9}", "1", "qwen_math"),
        ("nested parentheses", "\\boxed{" + "(" * 450 + "1" + ")" * 450 + "}", "2", "qwen_math"),
        ("nested braces", "\\boxed{" + "{" * 100_000 + "1" + "}" * 100_000 + "}", "2", "qwen_math"),
        ("1 MB in the box", "\\boxed{" + "1+" * 500_000 + "1}", "2", "qwen_math"),
        ("1 MB without answer", "7 " * 500_000, "2", "none"),
        ("unclosed box", "\\boxed{" + "{" * 500_000, "2", "qwen_math"),
    ]


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_math_reward_on_hostile_output_is_bounded_and_executes_nothing(tmp_path, verifier):
    marker = tmp_path / "pwned"
    math_reward = functools.partial(_math_reward, verifier=verifier)
    # an answer no in-process string check settles: it starts the shared worker pool, outside the timed calls
    assert math_reward(_boxed("x+1"), "1+x", "qwen_math") == 1.0
    for name, response, gold, template in _hostile_cases(str(marker)):
        start = time.monotonic()
        reward = math_reward(response, gold, template)
        elapsed = time.monotonic() - start
        assert reward == 0.0, name
        assert elapsed < GRADE_LIMIT_S, f"{name}: {elapsed:.2f} s"
    assert not marker.exists()
    start = time.monotonic()
    assert math_reward("x" * 1_000_000 + "\\boxed{3}", "3", "none") == 1.0  # still serving, and 1 MB is fine
    assert math_reward(_boxed("\\frac{6}{4}"), "1.5", "none") == 1.0
    assert time.monotonic() - start < 2 * GRADE_LIMIT_S


def test_batch_with_hostile_output_counts_timeouts_and_grades_the_rest(grader, tmp_path):
    marker = tmp_path / "pwned"
    cases = _hostile_cases(str(marker))
    responses = [response for _, response, _, _ in cases] + [_boxed("2\\sqrt{2}"), _boxed("7")]
    golds = [gold for _, _, gold, _ in cases] + ["\\sqrt{8}", "7"]
    start = time.monotonic()
    rewards, stats = grader.grade_batch(responses, golds, "qwen_math")
    assert time.monotonic() - start < GRADE_LIMIT_S * len(responses) / 2  # 2 workers, each answer bounded
    assert rewards == [0.0] * (len(responses) - 2) + [1.0, 1.0]
    assert stats["grading_timeouts"] >= 2  # the power tower and the nested parentheses hang math-verify
    assert stats["worker_restarts"] >= stats["grading_timeouts"]
    assert stats["answer_too_long"] == 2
    assert not marker.exists()
    rewards, stats = grader.grade_batch([_boxed("0.5"), _boxed("3")], ["1/2", "1/2"], "qwen_math")
    assert rewards == [1.0, 0.0] and stats["grading_timeouts"] == 0


def test_killed_workers_are_replaced(grader):
    for pid in grader.worker_pids():
        os.kill(pid, 9)
    time.sleep(0.2)
    rewards, stats = grader.grade_batch([_boxed("0.5"), _boxed("2")], ["1/2", "1/2"], "qwen_math")
    assert rewards == [1.0, 0.0]
    assert stats["worker_restarts"] == 2 and stats["grading_failures"] == 0

    # Killed while grading (two hanging answers): those score 0 as failures; the batch still finishes.
    pids = grader.start().worker_pids()  # both workers ready, so each takes one hanging answer at once
    killer = threading.Timer(0.3, lambda: [os.kill(pid, 9) for pid in pids])
    killer.start()
    rewards, stats = grader.grade_batch([_boxed("9^{9^{9^{9}}}"), _boxed("8^{8^{8^{8}}}"), _boxed("0.5")],
                                        ["1", "1", "1/2"], "qwen_math")
    killer.join()
    assert rewards == [0.0, 0.0, 1.0]
    assert stats["grading_failures"] == 2 and stats["grading_timeouts"] == 0


def test_stage_errors_are_reported_not_raised(monkeypatch):
    def broken_stage(pred, gold):
        raise RuntimeError("stage bug")

    monkeypatch.setitem(EQUIVALENCE_STAGES, "broken", broken_stage)
    assert is_equivalent("3", "4", ("broken",)) == (False, ["broken: RuntimeError: stage bug"])
    assert is_equivalent("0.5", "1/2", ("broken", "sympy"))[0]  # a later stage still decides
    assert is_equivalent("", "3") == (False, [])


def test_shutdown_and_settings():
    with RewardGrader(GraderConfig(num_workers=1, timeout_s=0.5)) as pool:
        assert pool.grade_batch([_boxed("1/2")], ["0.5"], "none")[0] == [1.0]
        pids = pool.worker_pids(include_standby=True)
    assert len(pids) == 2
    for pid in pids:  # exited and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(ValueError, match="closed"):
        pool.grade_batch([_boxed("3")], ["4"], "none")
    with pytest.raises(ValueError, match="valid names"):
        RewardGrader(num_wrokers=2)
    with pytest.raises(ValueError, match="valid names"):
        GraderConfig(stages=("sympy", "wolfram"))
    with pytest.raises(ValueError, match="timeout_s"):
        GraderConfig(timeout_s=0)
    with RewardGrader(num_workers=1) as pool, pytest.raises(ValueError, match="same length"):
        pool.grade_batch(["a", "b"], ["a"], "none")
