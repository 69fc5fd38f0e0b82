"""PNG plots (matplotlib's Agg canvas, no display, no pyplot state): training curves of one or several runs
on shared axes, evaluation bars, and the diagnostics. A panel is drawn only for metrics some run has; a
plot with nothing to show returns None instead of writing an empty image.
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D


@dataclass(frozen=True)
class Panel:
    title: str
    metrics: tuple[str, ...]
    """Metric names drawn in this panel; with several, each gets its own line style (legend inside)."""
    ylabel: str = ""
    labels: tuple[str, ...] = ()
    """Legend names of the metrics when there are several (default: the part after the last '/')."""


RL_PANELS = (
    Panel("Training reward", ("rollout/reward_mean",), "mean reward"),
    Panel("Rollout accuracy", ("rollout/accuracy",), "accuracy"),
    Panel("Eval accuracy", ("eval/accuracy",), "accuracy"),
    Panel("Response length", ("rollout/response_len_mean", "eval/response_len_mean"), "tokens", ("rollouts", "eval")),
    Panel("Length: correct vs incorrect", ("rollout/response_len_correct", "rollout/response_len_incorrect"), "tokens",
          ("correct", "incorrect")),
    Panel("Truncation rate", ("rollout/truncation_rate", "eval/truncation_rate"), "share", ("rollouts", "eval")),
    Panel("Responses without a final answer", ("rollout/no_answer_rate",), "share"),
    Panel("Per-question reward std", ("rollout/question_reward_std_mean",), "mean std"),
    Panel("Questions with zero reward std", ("rollout/zero_std_question_frac",), "share"),
    Panel("Policy entropy", ("train/entropy",), "nats / token"),
    Panel("KL to reference", ("train/kl_ref",), "k3 KL"),
    Panel("Clip fraction", ("train/clip_frac",), "share of tokens"),
    Panel("Log-prob mismatch (engine vs learner)", ("train/logp_mismatch",), "|dlogp|"),
    Panel("Loss", ("train/loss",), "loss"),
    Panel("Gradient norm", ("train/grad_norm",), "norm"),
    Panel("Grading failures", ("rollout/grading_failures",), "count"),
    Panel("Step time", ("time/generate_s", "time/reward_s", "time/train_s", "time/sync_s"), "seconds",
          ("generate", "reward", "train", "sync")),
)
PRETRAIN_PANELS = (
    Panel("Loss", ("train/loss", "val/loss"), "cross-entropy", ("train", "validation")),
    Panel("Throughput", ("train/tokens_per_s",), "tokens / s"),
    Panel("Model FLOPs utilisation", ("train/mfu",), "MFU"),
    Panel("Learning rate", ("train/lr",), "lr"),
)
_STYLES = ("-", "--", ":", "-.")


def _series(records: list[dict], metric: str, smooth: int) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[metric]) for r in records
              if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
    xs, ys = [p[0] for p in points], [float(p[1]) for p in points]
    if smooth > 1:  # trailing moving average over the last `smooth` steps (not points: evals are sparse)
        ys = [statistics.fmean(y for x, y in zip(xs, ys) if step - smooth < x <= step) for step in xs]
    return xs, ys


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    FigureCanvasAgg(fig)
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
    return path


def _grid(count: int, ncols: int = 3, size: tuple[float, float] = (4.6, 3.2)) -> tuple[Figure, list]:
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_curves(runs: dict[str, list[dict]], path: str | Path, panels: tuple[Panel, ...] = RL_PANELS, *,
                smooth: int = 1, title: str = "") -> Path | None:
    """One panel per metric group present in any run; runs overlaid by colour with a shared legend."""
    present = [p for p in panels if any(_series(recs, m, 1)[0] for recs in runs.values() for m in p.metrics)]
    if not present:
        return None
    fig, axes = _grid(len(present))
    colors = {label: f"C{i % 10}" for i, label in enumerate(runs)}
    for ax, panel in zip(axes, present):
        for label, recs in runs.items():
            names = panel.labels or tuple(m.split("/")[-1] for m in panel.metrics)
            for style, metric, metric_name in zip(_STYLES * 4, panel.metrics, names):
                xs, ys = _series(recs, metric, smooth)
                if xs:
                    name = label if len(panel.metrics) == 1 else f"{label}: {metric_name}"
                    ax.plot(xs, ys, style, color=colors[label], label=name, marker="o" if len(xs) <= 12 else None)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if len(panel.metrics) > 1:
            ax.legend(fontsize=7)
    if len(runs) > 1:
        handles = [Line2D([], [], color=c) for c in colors.values()]
        fig.legend(handles, list(runs), loc="outside upper center", ncols=min(len(runs), 6))
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_eval_bars(evals: dict[str, dict], path: str | Path, metric: str = "accuracy") -> Path | None:
    """Grouped bars: one group per benchmark (and the average), one bar per evaluated model / run."""
    if not evals:
        return None
    names: list[str] = []
    for results in evals.values():
        names += [n for n in results["benchmarks"] if n not in names]
    names.append("average")
    fig = Figure(figsize=(max(6.0, 1.3 * len(names) * max(1, len(evals)) ** 0.5), 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(evals)
    for i, (label, results) in enumerate(evals.items()):
        points = []  # (position, value %) of the benchmarks this evaluation has
        for j, n in enumerate(names):
            entry = results["average"] if n == "average" else results["benchmarks"].get(n)
            value = (entry["pass@k"].get(metric[5:]) if metric.startswith("pass@") else entry.get(metric)) if entry else None
            if value is not None:
                points.append((j + (i - (len(evals) - 1) / 2) * width, 100 * value))
        bars = ax.bar([p[0] for p in points], [p[1] for p in points], width, label=label, color=f"C{i % 10}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"Evaluation: {metric}")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_reflection_by_step(stats_by_step: dict[int, dict], path: str | Path) -> Path | None:
    """Self-reflection rate over training, and accuracy of responses with vs without it."""
    steps = [s for s in stats_by_step if s >= 0]
    if not steps:
        return None
    fig, (left, right) = _grid(2)
    left.plot(steps, [stats_by_step[s]["reflection_rate"] for s in steps], "-o", ms=3)
    left.set_title("Responses with self-reflection keywords", fontsize=10)
    left.set_ylabel("share")
    for key, style in (("accuracy_with", "-o"), ("accuracy_without", "--o")):
        pts = [(s, stats_by_step[s][key]) for s in steps if stats_by_step[s][key] is not None]
        right.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, label=key.replace("_", " "))
    right.set_title("Accuracy with vs without self-reflection", fontsize=10)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_std_weighting(weighting: dict, path: str | Path) -> Path | None:
    """Left: how many questions sit at each per-question accuracy, and the weight 1/std GRPO gives them.
    Right: per step, the median and the largest weight (relative spread of GRPO's difficulty weighting)."""
    rows = weighting["by_accuracy"]
    if not rows:
        return None
    fig, (left, right) = _grid(2)
    labels = [f"{r['correct']}/{r['group_size']}" for r in rows]
    left.bar(range(len(rows)), [r["questions"] for r in rows], color="C7", label="questions")
    left.set_xticks(range(len(rows)), labels, rotation=45, fontsize=7)
    left.set_xlabel("correct responses / group")
    left.set_ylabel("questions (all steps)")
    twin = left.twinx()
    weighted = [(i, r["weight_vs_half"]) for i, r in enumerate(rows) if r["weight_vs_half"] is not None]
    twin.plot([w[0] for w in weighted], [w[1] for w in weighted], "o-", color="C3")
    twin.set_ylabel("GRPO weight 1/std (x that of a 50% question)", color="C3", fontsize=8)
    left.set_title("GRPO's difficulty weighting", fontsize=10)
    steps = sorted(weighting["per_step"])
    for key, style in (("weight_median", "-o"), ("weight_max", "--o")):
        pts = [(s, weighting["per_step"][s][key]) for s in steps if weighting["per_step"][s][key] is not None]
        right.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3, label=key.replace("_", " "))
    right.set_title("Weight 1/std per step (questions with std > 0)", fontsize=10)
    right.set_xlabel("step")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return save_figure(fig, path)
