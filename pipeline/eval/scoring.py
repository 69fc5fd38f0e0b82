"""Grading of evaluation records, the unbiased pass@k estimator, per-benchmark summaries and their tables.

A record is one response in the generation-record shape (``benchmark``, ``question_id``, ``sample_index``,
``question``, ``gold``, ``response``, ``reward``, ``num_tokens``, ``truncated``, ``template``).
Accuracy is the mean reward over all responses (the authors' avg@n); pass@k is averaged over questions;
the "average" row is the plain mean over benchmarks, as the paper's tables report it.
"""

from __future__ import annotations

import contextlib
import statistics
from collections import defaultdict
from typing import Callable, Iterator, Sequence

from data_prep.templates import get_template

GradeFn = Callable[[Sequence[str], Sequence[str], str], list[float]]
"""Batch grading: ``(responses, golds, template) -> rewards`` (1.0 correct, 0.0 not), in order."""


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)`` for ``c`` correct of ``n`` samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):  # C(n-c, k) / C(n, k) as a product: no huge binomials
        miss *= 1.0 - k / i
    return 1.0 - miss


def per_response(fn: Callable[[str, str, str], float]) -> GradeFn:
    """A ``GradeFn`` from a one-response function with ``math_reward``'s signature."""
    return lambda responses, golds, template: [float(fn(r, g, template)) for r, g in zip(responses, golds)]


@contextlib.contextmanager
def reward_grader(num_workers: int = 2, verifier: str | None = None) -> Iterator[GradeFn]:
    """The project's reward (``pipeline.rl.reward``) as a ``GradeFn``, on a pool of grading processes, with
    ``verifier`` (``pipeline.rl.grading.VERIFIERS``; None: the library default)."""
    from pipeline.rl.reward import RewardGrader

    settings = {} if verifier is None else {"verifier": verifier}
    with RewardGrader(num_workers=num_workers, **settings) as grader:
        yield lambda responses, golds, template: grader.grade_batch(list(responses), list(golds), template)[0]


def grade_records(records: list[dict], grade: GradeFn, *, truncated_scores_zero: bool = False) -> None:
    """Fill each record's ``reward`` in place, grading per template in one batch each.

    ``truncated_scores_zero`` gives truncated responses 0 without grading (the RL reward's rule); the authors'
    evaluation grades whatever text a truncated response holds, which is the default here.
    """
    by_template: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if truncated_scores_zero and record["truncated"]:
            record["reward"] = 0.0
        else:
            by_template[record["template"]].append(record)
    for template, group in by_template.items():
        rewards = grade([r["response"] for r in group], [r["gold"] for r in group], template)
        if len(rewards) != len(group):
            raise ValueError(f"the grading function returned {len(rewards)} rewards for {len(group)} responses")
        for record, reward in zip(group, rewards):
            record["reward"] = float(reward)


def answered(record: dict, verifier: str | None = None) -> bool:
    """Whether the response gives an answer (the template study's measure): one its template's extractor finds,
    or, given ``verifier``, one that verifier reads (the authors' verifiers read only ``\\boxed{...}`` and the strict
    r1 tag format)."""
    if verifier is None:
        answer = get_template(record["template"]).extract_answer(record["response"])
    else:
        from pipeline.rl.grading import get_verifier

        answer = get_verifier(verifier).extract(record["response"], record["template"])
    return answer is not None and bool(answer.strip())


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarize(records: list[dict], pass_k: Sequence[int] = (1,), verifier: str | None = None) -> dict:
    """One benchmark's numbers from its graded records (``answer_rate`` per ``answered(record, verifier)``)."""
    if not records:
        raise ValueError("no records to summarise")
    questions: dict[object, list[float]] = defaultdict(list)
    for r in records:
        questions[r["question_id"]].append(r["reward"])
    sizes = {len(v) for v in questions.values()}
    correct = [r["num_tokens"] for r in records if r["reward"] > 0]
    incorrect = [r["num_tokens"] for r in records if r["reward"] <= 0]
    out = {
        "num_questions": len(questions),
        "samples_per_question": min(sizes) if len(sizes) == 1 else sorted(sizes),
        "accuracy": statistics.fmean(r["reward"] for r in records),
        "pass@k": {},
        "response_len_mean": statistics.fmean(r["num_tokens"] for r in records),
        "response_len_correct": _mean(correct),
        "response_len_incorrect": _mean(incorrect),
        "truncation_rate": statistics.fmean(bool(r["truncated"]) for r in records),
        "answer_rate": statistics.fmean(answered(r, verifier) for r in records),
    }
    for k in pass_k:
        if k > min(sizes):
            raise ValueError(f"pass@{k} needs at least {k} samples per question, have {min(sizes)}; raise n or "
                             "drop that k")
        out["pass@k"][str(k)] = statistics.fmean(
            pass_at_k(len(v), sum(x > 0 for x in v), k) for v in questions.values())
    return out


AVERAGED = ("accuracy", "response_len_mean", "truncation_rate", "answer_rate")


def average(benchmarks: dict[str, dict]) -> dict:
    """Plain mean over benchmarks of the headline numbers (the paper's "Avg." column)."""
    out = {key: statistics.fmean(b[key] for b in benchmarks.values()) for key in AVERAGED}
    ks = set.intersection(*(set(b["pass@k"]) for b in benchmarks.values())) if benchmarks else set()
    out["pass@k"] = {k: statistics.fmean(b["pass@k"][k] for b in benchmarks.values()) for k in sorted(ks, key=int)}
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def results_markdown(results: dict) -> str:
    """A results dict (``evaluate``'s) as a markdown table: one row per benchmark, then the average."""
    ks = list(results["average"]["pass@k"])
    header = ["benchmark", "questions", "accuracy %"] + [f"pass@{k} %" for k in ks if k != "1" or len(ks) > 1]
    header += ["mean length", "len correct", "len incorrect", "truncated %", "answered %"]
    rows = []
    for name, b in [*results["benchmarks"].items(), ("average", results["average"])]:
        row = [name, str(b.get("num_questions", "")), _pct(b["accuracy"])]
        row += [_pct(b["pass@k"].get(k)) for k in ks if k != "1" or len(ks) > 1]
        row += [_num(b["response_len_mean"]), _num(b.get("response_len_correct")),
                _num(b.get("response_len_incorrect")), _pct(b["truncation_rate"]), _pct(b["answer_rate"])]
        rows.append(row)
    return markdown_table(header, rows)


def comparison_markdown(results_by_label: dict[str, dict], metric: str = "accuracy") -> str:
    """Several results side by side (e.g. before and after stage two): one row per benchmark, one column each."""
    names: list[str] = []
    for results in results_by_label.values():
        names += [n for n in results["benchmarks"] if n not in names]
    rows = []
    for name in [*names, "average"]:
        row = [name]
        for results in results_by_label.values():
            entry = results["average"] if name == "average" else results["benchmarks"].get(name)
            row.append(_pct(_metric(entry, metric)) if entry else "-")
        rows.append(row)
    return markdown_table(["benchmark", *(f"{label} ({metric} %)" for label in results_by_label)], rows)


def _metric(entry: dict, metric: str) -> float | None:
    if metric.startswith("pass@"):
        return entry["pass@k"].get(metric[len("pass@"):])
    return entry.get(metric)
