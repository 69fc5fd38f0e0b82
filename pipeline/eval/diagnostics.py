"""The paper's diagnostics over generation records (evaluation's generations.jsonl or the RL run's).

- self-reflection: share of responses with the authors' self-reflection keywords, accuracy with vs without;
- answering: share of responses whose template's extractor finds an answer, per template;
- length of correct vs incorrect responses per RL step;
- GRPO's difficulty weighting: dividing a question's advantages by its reward std weights it by ``1/std``,
  so questions that are nearly always or nearly never solved count most. Per step: the std per question and
  the weight distribution.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from pipeline.eval.scoring import answered

AUTHORS_REFLECTION_KEYWORDS = (
    "recheck", "rethink", "reassess", "reevaluate", "re-evaluate", "reevaluation", "re-examine", "reexamine",
    "reconsider", "reanalyze", "double-check", "check again", "think again", "verify again", "go over the steps",
)
"""The keyword pool of sail-sg/understand-r1-zero ``analysis/sr_detection.py`` (lower-case substring match).
The authors cross-check it with an LLM judge, which is not reproduced here."""

KEYWORD_SETS: dict[str, tuple[str, ...]] = {
    "authors": AUTHORS_REFLECTION_KEYWORDS,
    "extended": AUTHORS_REFLECTION_KEYWORDS + (
        "double check", "re-check", "try again", "let me verify", "let me check", "recalculate", "wait", "aha"),
}


def read_generations(path: str | Path) -> list[dict]:
    """Records of a generations.jsonl (a file, or a directory holding one); errors name the file and line."""
    p = Path(path)
    if p.is_dir():
        p = p / "generations.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"no generations file at {p}; expected a generations.jsonl from the RL run or "
                                "from `python -m pipeline.eval run`")
    records = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{p}, line {lineno}: not valid JSON ({error.msg})") from None
        missing = [k for k in ("question_id", "response", "reward", "num_tokens") if k not in record]
        if missing:
            raise ValueError(f"{p}, line {lineno}: generation record lacks {missing}")
        records.append(record)
    return records


def keyword_set(name: str) -> tuple[str, ...]:
    try:
        return KEYWORD_SETS[name]
    except KeyError:
        raise ValueError(f"unknown keyword set {name!r}; valid names: {sorted(KEYWORD_SETS)}") from None


def reflection_keywords_in(text: str, keywords: tuple[str, ...] = AUTHORS_REFLECTION_KEYWORDS) -> list[str]:
    lower = text.lower()
    return [k for k in keywords if k in lower]


def _mean(values) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def reflection_stats(records: list[dict], keywords: tuple[str, ...] = AUTHORS_REFLECTION_KEYWORDS) -> dict:
    """Response- and question-level self-reflection rates and accuracy with vs without it."""
    if not records:
        raise ValueError("no generation records")
    hits = [reflection_keywords_in(r["response"], keywords) for r in records]
    with_sr = [r for r, h in zip(records, hits) if h]
    without = [r for r, h in zip(records, hits) if not h]
    by_question: dict[object, bool] = defaultdict(bool)
    for r, h in zip(records, hits):
        by_question[(r.get("benchmark"), r.get("step"), r["question_id"])] |= bool(h)
    counts = {k: sum(k in h for h in hits) for k in keywords}
    return {
        "responses": len(records),
        "reflection_rate": len(with_sr) / len(records),
        "question_reflection_rate": statistics.fmean(by_question.values()),
        "n_with": len(with_sr), "n_without": len(without),
        "accuracy_with": _mean(r["reward"] > 0 for r in with_sr),
        "accuracy_without": _mean(r["reward"] > 0 for r in without),
        "len_with": _mean(r["num_tokens"] for r in with_sr),
        "len_without": _mean(r["num_tokens"] for r in without),
        "keyword_counts": {k: v for k, v in counts.items() if v},
    }


def by_step(records: list[dict]) -> dict[int, list[dict]]:
    """Records grouped by RL step (records without a step, e.g. evaluation's, fall under step -1)."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        groups[int(r.get("step", -1))].append(r)
    return dict(sorted(groups.items()))


def reflection_by_step(records: list[dict], keywords: tuple[str, ...] = AUTHORS_REFLECTION_KEYWORDS) -> dict[int, dict]:
    return {step: reflection_stats(group, keywords) for step, group in by_step(records).items()}


def answer_rate_by_template(records: list[dict]) -> dict[str, dict]:
    """Per template: responses, share that give an extractable answer, accuracy."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["template"]].append(r)
    return {t: {"responses": len(g), "answer_rate": statistics.fmean(answered(r) for r in g),
                "accuracy": statistics.fmean(r["reward"] > 0 for r in g)} for t, g in sorted(groups.items())}


def length_by_correctness(records: list[dict]) -> dict[int, dict]:
    """Per step: mean response length (tokens) of all, correct and incorrect responses, and their counts."""
    out = {}
    for step, group in by_step(records).items():
        correct = [r["num_tokens"] for r in group if r["reward"] > 0]
        incorrect = [r["num_tokens"] for r in group if r["reward"] <= 0]
        out[step] = {"len_mean": statistics.fmean(r["num_tokens"] for r in group), "len_correct": _mean(correct),
                     "len_incorrect": _mean(incorrect), "n_correct": len(correct), "n_incorrect": len(incorrect)}
    return out


def question_groups(records: list[dict]) -> dict[tuple[int, object], list[float]]:
    """Rewards per (step, question): the G responses GRPO normalises together."""
    groups: dict[tuple[int, object], list[float]] = defaultdict(list)
    for r in records:
        groups[(int(r.get("step", -1)), r["question_id"])].append(float(r["reward"]))
    return groups


def run_group_size(run_dir: str | Path) -> int | None:
    """G of an RL run, from the rl_config.json its controller writes (None when absent)."""
    path = Path(run_dir) / "rl_config.json"
    return int(json.loads(path.read_text())["group_size"]) if path.exists() else None


def std_weighting(records: list[dict], eps: float = 1e-8, group_size: int | None = None) -> dict:
    """GRPO's per-question weight ``1/(std + eps)`` (unbiased std, as the authors' ``std(dim=1)``), binary rewards.

    Returns ``per_step`` (questions, zero-std share, mean reward std, weight median / max / max-over-min among
    questions with std > 0), ``by_accuracy`` (pooled over steps: for each per-question accuracy, how many
    questions, their std and weight, and the weight relative to a question solved half the time) and
    ``partial_groups``. With ``group_size``, groups with fewer logged responses (the RL run logged only part of
    them) are left out rather than giving a wrong std.
    """
    groups = question_groups(records)
    if not groups:
        raise ValueError("no generation records")
    complete = {key: v for key, v in groups.items() if len(v) >= 2 and (group_size is None or len(v) == group_size)}
    per_step: dict[int, dict] = {}
    for step in sorted({s for s, _ in complete}):
        rewards = [v for (s, _), v in complete.items() if s == step]
        stds = [statistics.stdev(v) for v in rewards]
        weights = sorted(1 / (s + eps) for s in stds if s > 0)
        per_step[step] = {
            "questions": len(rewards),
            "zero_std_frac": sum(s == 0 for s in stds) / len(stds),
            "reward_std_mean": statistics.fmean(stds),
            "weight_median": statistics.median(weights) if weights else None,
            "weight_max": weights[-1] if weights else None,
            "weight_max_over_min": weights[-1] / weights[0] if weights else None,
        }
    if not per_step:
        raise ValueError(f"no question has its whole group of responses ({group_size or '>= 2'}) logged at one step; "
                         "std weighting needs every response of a question (RL setting log_generations=-1)")
    buckets: dict[tuple[int, int], int] = defaultdict(int)
    for v in complete.values():
        buckets[(len(v), sum(x > 0 for x in v))] += 1
    by_accuracy = []
    for (g, c), count in sorted(buckets.items()):
        std = math.sqrt(c * (g - c) / (g * (g - 1)))  # unbiased std of c ones among g binary rewards
        half = math.sqrt((g // 2) * (g - g // 2) / (g * (g - 1)))
        by_accuracy.append({"group_size": g, "correct": c, "accuracy": c / g, "questions": count, "std": std,
                            "weight": 1 / (std + eps) if std > 0 else None,
                            "weight_vs_half": half / std if std > 0 else None})
    return {"per_step": per_step, "by_accuracy": by_accuracy, "partial_groups": len(groups) - len(complete)}
