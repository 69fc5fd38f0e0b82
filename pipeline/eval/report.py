"""A run report: one markdown file with the runs' numbers, training curves, the paper's diagnostics and
evaluation tables side by side (e.g. before and after stage two). Images go to ``<report stem>_assets/``
beside the report and are linked by relative path, so the folder can be moved or published as it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.eval import diagnostics, plots
from pipeline.eval.evaluate import write_atomic
from pipeline.eval.scoring import comparison_markdown, markdown_table, results_markdown
from pipeline.metrics import read_metrics

_PRETRAIN_KEYS = ("val/loss", "train/tokens_per_s", "train/mfu", "train/lr")
_RL_SUMMARY = ("rollout/reward_mean", "rollout/accuracy", "rollout/response_len_mean", "rollout/truncation_rate",
               "train/entropy", "eval/accuracy")
_PRETRAIN_SUMMARY = ("train/loss", "val/loss", "train/tokens_per_s", "train/mfu")


def run_kind(records: list[dict]) -> str:
    keys = {k for r in records for k in r}
    if any(k.startswith("rollout/") for k in keys):
        return "rl"
    return "pretrain" if keys & set(_PRETRAIN_KEYS) else "other"


def labels_for(paths: list[Path], given: list[str] | None, what: str) -> list[str]:
    if given:
        if len(given) != len(paths):
            raise ValueError(f"{len(given)} {what} labels for {len(paths)} {what}s; give one label per {what}")
        return list(given)
    labels = []
    for p in paths:
        base = p.parent.name if p.name == "results.json" else (p.name or str(p))
        label, i = base, 2
        while label in labels:
            label, i = f"{base}-{i}", i + 1
        labels.append(label)
    return labels


def _fmt(x) -> str:
    if x is None:
        return "-"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _first_last(records: list[dict], metric: str) -> str:
    values = [r[metric] for r in records if isinstance(r.get(metric), (int, float))]
    return f"{_fmt(values[0])} -> {_fmt(values[-1])}" if values else "-"


def _spread(steps: list[int], limit: int = 8) -> list[int]:
    if len(steps) <= limit:
        return steps
    return sorted({steps[round(i * (len(steps) - 1) / (limit - 1))] for i in range(limit)})


def load_eval(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.exists():
        raise FileNotFoundError(f"no evaluation results at {p}; pass a results.json written by "
                                "`python -m pipeline.eval run` (or its output directory)")
    results = json.loads(p.read_text())
    if "benchmarks" not in results or "average" not in results:
        raise ValueError(f"{p} is not an evaluation results file (no 'benchmarks' / 'average')")
    return results


def build_report(run_dirs: list[str | Path], out: str | Path, *, labels: list[str] | None = None,
                 evals: list[str | Path] = (), eval_labels: list[str] | None = None, smooth: int = 1,
                 keywords: str = "authors") -> Path:
    """Write the report (markdown) and its images; returns the report's path."""
    out = Path(out)
    if out.suffix != ".md":
        raise ValueError(f"report path {out} must end in .md")
    run_paths, eval_paths = [Path(p) for p in run_dirs], [Path(p) for p in evals]
    if not run_paths and not eval_paths:
        raise ValueError("nothing to report: give --run-dir and/or --eval")
    words = diagnostics.keyword_set(keywords)
    runs = {label: read_metrics(p) for label, p in zip(labels_for(run_paths, labels, "run"), run_paths)}
    run_dirs_by_label = dict(zip(runs, run_paths))
    eval_results = {label: load_eval(p) for label, p in zip(labels_for(eval_paths, eval_labels, "eval"), eval_paths)}
    assets = out.parent / f"{out.stem}_assets"

    def image(path: Path | None, alt: str) -> str:
        return f"![{alt}]({path.relative_to(out.parent).as_posix()})\n" if path else ""

    kinds = {label: run_kind(recs) for label, recs in runs.items()}
    parts = [f"# Run report\n\nGenerated {time.strftime('%Y-%m-%d %H:%M:%S')}.\n"]
    if runs:
        parts.append("## Runs\n\n" + markdown_table(
            ["run", "kind", "steps logged", "last step", "path"],
            [[label, kinds[label], str(len(recs)), _fmt(recs[-1]["step"] if recs else None), str(run_dirs_by_label[label])]
             for label, recs in runs.items()]))
    pre = {label: recs for label, recs in runs.items() if kinds[label] == "pretrain"}
    if pre:
        parts.append("## Stage one: continued pretraining\n\nFirst -> last logged value.\n\n" + markdown_table(
            ["run", *_PRETRAIN_SUMMARY], [[label, *(_first_last(recs, m) for m in _PRETRAIN_SUMMARY)]
                                          for label, recs in pre.items()]))
        parts.append(image(plots.plot_curves(pre, assets / "pretrain_curves.png", plots.PRETRAIN_PANELS,
                                             smooth=smooth), "stage-one curves"))
    rl = {label: recs for label, recs in runs.items() if kinds[label] == "rl"}
    if rl:
        parts.append("## Stage two: RL\n\nFirst -> last logged value.\n\n" + markdown_table(
            ["run", *_RL_SUMMARY], [[label, *(_first_last(recs, m) for m in _RL_SUMMARY)] for label, recs in rl.items()]))
        parts.append(image(plots.plot_curves(rl, assets / "rl_curves.png", plots.RL_PANELS, smooth=smooth),
                           "training curves"))
        for index, label in enumerate(rl):
            gen_path = run_dirs_by_label[label] / "generations.jsonl"
            if gen_path.exists():
                parts.append(_generation_diagnostics(label, diagnostics.read_generations(gen_path), words,
                                                     assets, f"run{index}", image,
                                                     diagnostics.run_group_size(run_dirs_by_label[label])))
    if eval_results:
        sets = {label: sorted(r["benchmarks"]) for label, r in eval_results.items()}
        note = "" if len({tuple(v) for v in sets.values()}) == 1 else (
            "Note: the evaluations cover different benchmarks, so each average is over its own set: "
            + "; ".join(f"{label}: {', '.join(v)}" for label, v in sets.items()) + ".\n\n")
        parts.append("## Evaluation\n\n" + note + comparison_markdown(eval_results))
        parts.append(image(plots.plot_eval_bars(eval_results, assets / "eval_accuracy.png"), "evaluation accuracy"))
        for label, results in eval_results.items():
            cfg = results.get("config", {})
            parts.append(f"### {label}\n\nModel `{results.get('model') or '?'}`, template `{results.get('template')}`, "
                         f"temperature {cfg.get('temperature', '?')}, n {cfg.get('n', '?')}, "
                         f"max new tokens {cfg.get('max_new_tokens', '?')}.\n\n" + results_markdown(results))
    write_atomic(out, "\n".join(p for p in parts if p))
    return out


def _generation_diagnostics(label: str, records: list[dict], words, assets: Path, stem: str, image,
                            group_size: int | None) -> str:
    parts = [f"### Diagnostics from sampled generations: {label}\n"]
    lengths = diagnostics.length_by_correctness(records)
    steps = _spread(list(lengths))
    parts.append("Response length (tokens) of correct vs incorrect responses.\n\n" + markdown_table(
        ["step", "all", "correct", "incorrect", "n correct", "n incorrect"],
        [[str(s), *(_fmt(lengths[s][k]) for k in ("len_mean", "len_correct", "len_incorrect", "n_correct",
                                                   "n_incorrect"))] for s in steps]))
    reflection = diagnostics.reflection_by_step(records, words)
    parts.append("Self-reflection (keywords of the authors' analysis): share of responses, accuracy with / without.\n\n"
                 + markdown_table(["step", "responses", "with reflection %", "acc. with %", "acc. without %"],
                                  [[str(s), str(reflection[s]["responses"]), _pct(reflection[s]["reflection_rate"]),
                                    _pct(reflection[s]["accuracy_with"]), _pct(reflection[s]["accuracy_without"])]
                                   for s in _spread(list(reflection))]))
    parts.append(image(plots.plot_reflection_by_step(reflection, assets / f"{stem}_reflection.png"), "self-reflection"))
    try:
        weighting = diagnostics.std_weighting(records, group_size=group_size)
    except ValueError as error:  # e.g. only part of each group was logged
        parts.append(f"GRPO std weighting: not available ({error}).\n")
        return "\n".join(p for p in parts if p)
    parts.append("GRPO's difficulty weighting: dividing advantages by the per-question reward std weights each "
                 "question by 1/std (Dr. GRPO removes it). Pooled over logged steps:\n\n" + markdown_table(
                     ["correct / group", "questions", "std", "weight vs 50% question"],
                     [[f"{r['correct']}/{r['group_size']}", str(r["questions"]), f"{r['std']:.3f}",
                       _fmt(r["weight_vs_half"])] for r in weighting["by_accuracy"]]))
    parts.append(image(plots.plot_std_weighting(weighting, assets / f"{stem}_std_weighting.png"), "std weighting"))
    return "\n".join(p for p in parts if p)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"
