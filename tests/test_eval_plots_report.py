"""Plots and the run report from real metrics files (MetricsWriter) and generations: valid PNGs that matplotlib
reads back at a sensible size, one panel per metric present, and a markdown report whose images resolve."""

import json
import math
import re

import pytest
from matplotlib.image import imread

from pipeline.eval import plots
from pipeline.eval.__main__ import main
from pipeline.eval.scoring import average, summarize
from pipeline.metrics import MetricsWriter

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_w=300, min_h=200):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    h, w, channels = imread(path).shape
    assert w >= min_w and h >= min_h and channels in (3, 4)
    return w, h


def write_rl_run(out, *, slope, group=4, questions=3, steps=6, configured_group=4):
    writer = MetricsWriter(out)
    (out / "rl_config.json").write_text(json.dumps({"group_size": configured_group}))
    gens = []
    for step in range(steps):
        acc = min(1.0, 0.2 + slope * step)
        metrics = {"rollout/reward_mean": acc, "rollout/accuracy": acc, "rollout/response_len_mean": 100 + 10 * step,
                   "rollout/response_len_correct": 90 + 5 * step,
                   "rollout/response_len_incorrect": float("nan") if step == 5 else 120 + 20 * step,
                   "rollout/truncation_rate": 0.01, "rollout/question_reward_std_mean": 0.4,
                   "rollout/zero_std_question_frac": 0.3, "rollout/grading_failures": 0.0, "train/loss": 0.1 / (step + 1),
                   "train/entropy": 1.5 - 0.1 * step, "train/clip_frac": 0.02, "train/kl_ref": 0.0,
                   "train/logp_mismatch": 1e-3, "train/grad_norm": 0.5, "time/generate_s": 2.0, "time/reward_s": 0.1,
                   "time/train_s": 1.0, "time/sync_s": 0.05}
        if step % 3 == 0:
            metrics.update({"eval/accuracy": acc, "eval/response_len_mean": 80.0})
        writer.log(step, metrics)
        for q in range(questions):
            for i in range(group):
                correct = i < (q + step) % (group + 1)
                gens.append({"step": step, "question_id": q, "question": f"q{q}", "gold": "1",
                             "response": ("let me recheck. " if i == 0 else "") + ("\\boxed{1}" if correct else "\\boxed{2}"),
                             "reward": float(correct), "num_tokens": 50 + 10 * i, "truncated": False,
                             "template": "qwen_math"})
    writer.close()
    (out / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    return out


def write_pretrain_run(out):
    writer = MetricsWriter(out)
    for step in range(1, 9):
        metrics = {"train/loss": 3.0 / step, "train/tokens_per_s": 2000.0, "train/mfu": 0.3, "train/lr": 1e-4}
        if step % 4 == 0:
            metrics["val/loss"] = 3.2 / step
        writer.log(step, metrics)
    writer.close()
    return out


def write_eval(path, accuracies):
    benchmarks = {}
    for name, acc in accuracies.items():
        records = [{"question_id": i, "reward": float(i < acc * 10), "num_tokens": 100, "truncated": False,
                    "template": "qwen_math", "response": "\\boxed{1}"} for i in range(10)]
        benchmarks[name] = summarize(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": str(path.parent), "template": "qwen_math", "config": {"temperature": 0.0},
                                "benchmarks": benchmarks, "average": average(benchmarks)}))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"grpo": write_rl_run(root / "grpo", slope=0.1), "drgrpo": write_rl_run(root / "drgrpo", slope=0.15, configured_group=8),  # logged 4 of 8 per question
            "pretrain": write_pretrain_run(root / "pretrain"), "root": root,
            "before": write_eval(root / "eval_before" / "results.json", {"math500": 0.1, "aime24": 0.0}),
            "after": write_eval(root / "eval_after" / "results.json", {"math500": 0.5, "aime24": 0.1, "amc": 0.3})}


def test_smoothing_averages_over_steps_so_sparse_evals_stay_raw():
    records = [{"step": s, "rollout/reward_mean": float(s)} for s in range(1, 7)]
    records += [{"step": s, "eval/accuracy": s / 100} for s in (0, 25, 50)]
    assert plots._series(records, "rollout/reward_mean", 3) == ([1, 2, 3, 4, 5, 6], [1.0, 1.5, 2.0, 3.0, 4.0, 5.0])
    assert plots._series(records, "eval/accuracy", 5) == ([0, 25, 50], [0.0, 0.25, 0.5])  # one eval per window


def test_curves_are_pngs_with_one_panel_per_metric_present(runs, tmp_path):
    from pipeline.metrics import read_metrics

    both = {"GRPO": read_metrics(runs["grpo"]), "Dr. GRPO": read_metrics(runs["drgrpo"])}
    full_w, full_h = assert_png(plots.plot_curves(both, tmp_path / "rl.png", smooth=2))
    assert full_w == 3 * 460 and full_h == round((math.ceil(len(plots.RL_PANELS) / 3) * 3.2 + 0.6) * 100)
    reward_only = {"a": [{"step": s, "rollout/reward_mean": s / 10, "rollout/accuracy": None} for s in range(4)]}
    assert assert_png(plots.plot_curves(reward_only, tmp_path / "one.png")) == (460, 380)  # the single panel present
    assert plots.plot_curves({"a": [{"step": 0, "custom/thing": 1.0}]}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert_png(plots.plot_curves({"pre": read_metrics(runs["pretrain"])}, tmp_path / "pre.png", plots.PRETRAIN_PANELS))
    before, after = (json.loads(runs[k].read_text()) for k in ("before", "after"))
    assert_png(plots.plot_eval_bars({"before": before, "after": after}, tmp_path / "bars.png"))
    assert not list(tmp_path.glob("*.tmp*"))


def test_report_with_runs_diagnostics_and_evals_side_by_side(runs, tmp_path):
    out = tmp_path / "site" / "report.md"
    code = main(["report", "--run-dir", str(runs["pretrain"]), "--run-dir", str(runs["grpo"]), "--run-dir",
                 str(runs["drgrpo"]), "--label", "stage one", "--label", "GRPO", "--label", "Dr. GRPO",
                 "--eval", str(runs["before"]), str(runs["after"]), "--eval-label", "before RL", "after RL",
                 "--out", str(out)])
    assert code == 0
    text = out.read_text()
    for heading in ("## Stage one", "## Stage two", "### Diagnostics from sampled generations: GRPO", "## Evaluation"):
        assert heading in text
    assert "| math500 | 10.0 | 50.0 |" in text and "| amc | - | 30.0 |" in text
    assert "| average | 5.0 | 30.0 |" in text  # plain mean over each evaluation's own benchmarks
    assert "| GRPO | 0.2 -> 0.7 |" in text
    assert "GRPO std weighting: not available" in text.split("Dr. GRPO", 2)[-1]
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"report_assets/pretrain_curves.png", "report_assets/rl_curves.png", "report_assets/eval_accuracy.png",
            "report_assets/run0_std_weighting.png", "report_assets/run1_reflection.png"} <= set(images)
    assert "report_assets/run1_std_weighting.png" not in images
    for rel in images:
        assert not rel.startswith("/")
        assert_png(out.parent / rel)


def test_plot_reflection_and_rl_diagnostics_commands(runs, tmp_path):
    assert main(["plot", "--run-dir", str(runs["grpo"]), "--run-dir", str(runs["pretrain"]),
                 "--eval", str(runs["before"]), "--out", str(tmp_path / "plots")]) == 0
    for name in ("rl_curves.png", "pretrain_curves.png", "eval_accuracy.png"):
        assert_png(tmp_path / "plots" / name)
    assert main(["reflection", "--generations", str(runs["grpo"] / "generations.jsonl"), "--out", str(tmp_path / "r")]) == 0
    overall = json.loads((tmp_path / "r" / "reflection.json").read_text())["overall"]
    assert overall["reflection_rate"] == pytest.approx(0.25)  # sample 0 of every group says "recheck"
    assert_png(tmp_path / "r" / "reflection_by_step.png")
    assert main(["rl-diagnostics", "--run-dir", str(runs["grpo"]), "--out", str(tmp_path / "d")]) == 0
    result = json.loads((tmp_path / "d" / "rl_diagnostics.json").read_text())
    assert set(result) == {"length_by_correctness", "reflection_by_step", "std_weighting"}
    assert result["std_weighting"]["per_step"]["0"]["questions"] == 3
    assert_png(tmp_path / "d" / "std_weighting.png")
    assert main(["rl-diagnostics", "--run-dir", str(runs["drgrpo"]), "--out", str(tmp_path / "d2")]) == 0
    assert json.loads((tmp_path / "d2" / "rl_diagnostics.json").read_text())["std_weighting"] is None
    assert not (tmp_path / "d2" / "std_weighting.png").exists()
    assert main(["report", "--run-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x.md")]) == 2
    assert main(["report", "--eval", str(runs["before"]), "--out", str(tmp_path / "x.html")]) == 2
