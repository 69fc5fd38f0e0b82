"""Does Dr. GRPO raise held-out greedy accuracy on the tiny default? Stage one once, then stage two per seed.

    .venv/bin/python docs/rl_gain/run.py [--out /tmp/rl_gain] [--seeds 0 1 2] [--reuse-stage1]

Everything comes from the `tiny_cpu` recipe (recipes/pipeline_recipe.py), as the README's main job runs it:
synthetic data, the tiny stage one, then its Dr. GRPO settings with only the seed changed and the greedy
evaluation on all held-out synthetic test questions (not the recipe's first 100) every 10 steps. Each stage-two
run's wall time counts from its torchrun start to its exit (engine build, evaluations and checkpoints included).
Writes OUT/{data,stage1,seed_N}/ and, beside this file, results.md, results.json and rl_curves.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))


def torchrun(module: str, config: Path, ranks: int) -> float:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                    "-m", module, "--config", str(config)], cwd=REPO, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    from recipes.pipeline_recipe import resolve, tiny_cpu
    from recipes.tasks import prepare_data

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/rl_gain")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--reuse-stage1", action="store_true",
                   help="reuse OUT/stage1's model (made by an earlier run, maybe from older code)")
    args = p.parse_args()
    if Path(args.out).exists() and any(Path(args.out).iterdir()) and not args.reuse_stage1:
        raise SystemExit(f"{args.out} is not empty: an earlier run's stage-one model and stage-two runs would be "
                         "reused (a stage-two run resumes from its checkpoints). Pass a new --out, or "
                         "--reuse-stage1 to keep its stage-one model and rerun stage two.")

    recipe = tiny_cpu()
    recipe.output_dir, recipe.ranks_per_node = args.out, args.ranks
    recipe = resolve(recipe)
    out = Path(args.out)
    prepare_data(recipe.data)
    stage1_s = 0.0
    if not (out / "stage1" / "hf" / "config.json").exists():
        config = out / "stage1.json"
        config.write_text(recipe.stage1.to_json())
        stage1_s = torchrun("pipeline.pretrain", config, args.ranks)

    runs = []
    for seed in args.seeds:
        run_dir = out / f"seed_{seed}"
        shutil.rmtree(run_dir, ignore_errors=True)  # an earlier run's checkpoints would be resumed
        cfg = dataclasses.replace(recipe.stage2, seed=seed, output_dir=str(run_dir), eval_max_questions=0,
                                  eval_every=10)
        config = out / f"seed_{seed}.json"
        config.write_text(cfg.to_json())
        wall = torchrun("pipeline.rl", config, args.ranks)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
        runs.append({"seed": seed, "steps": cfg.steps, "wall_s": wall, "accuracy_before": evals[0][1],
                     "accuracy_after": evals[-1][1], "gain_points": 100 * (evals[-1][1] - evals[0][1]),
                     "eval_curve": evals})

    test_questions = sum(1 for _ in open(recipe.stage2.test_questions))
    subprocess.run([sys.executable, "-m", "pipeline.eval", "plot", *[a for r in runs for a in
                    ("--run-dir", str(out / f"seed_{r['seed']}"), "--label", f"seed {r['seed']}")], "--out", str(HERE)],
                   cwd=REPO, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    s2 = recipe.stage2
    engine = s2.engine
    if engine == "auto":
        import torch

        from pipeline.rl.engine import vllm_available

        engine = "auto (vLLM)" if torch.cuda.is_available() and vllm_available() else "auto (torch engine)"
    lines = [
        "# Dr. GRPO on the tiny default: held-out greedy accuracy before and after stage two",
        "",
        f"Command: `.venv/bin/python docs/rl_gain/run.py --seeds {' '.join(map(str, args.seeds))}` "
        f"({args.ranks} ranks; machine: {os.cpu_count()} CPU cores). Stage one: the recipe's tiny default "
        f"({recipe.stage1.schedule.train_iters} steps x {recipe.stage1.schedule.global_batch_size} sequences"
        + (f", {stage1_s:.0f} s" if stage1_s else "") + ").",
        f"Stage two: {s2.steps} steps x {s2.questions_per_step} questions x {s2.group_size} samples, "
        f"max {s2.max_new_tokens} new tokens, lr {s2.lr}, aggregation {s2.aggregation}, std_normalize "
        f"{s2.std_normalize}, engine {engine}, template {s2.template!r}. Greedy accuracy on all "
        f"{test_questions} held-out synthetic test questions.",
        "",
        "| seed | accuracy before | after | gain (points) | stage-two wall time |",
        "|---|---|---|---|---|",
        *[f"| {r['seed']} | {100 * r['accuracy_before']:.1f}% | {100 * r['accuracy_after']:.1f}% | "
          f"{r['gain_points']:+.1f} | {r['wall_s'] / 60:.1f} min |" for r in runs],
        "",
        "Accuracy during training (step: accuracy): "
        + "; ".join(f"seed {r['seed']}: " + ", ".join(f"{s}: {100 * a:.1f}%" for s, a in r["eval_curve"]) for r in runs),
        "",
        "Curves (every RL metric, seeds overlaid): ![curves](rl_curves.png)",
        "",
    ]
    (HERE / "results.md").write_text("\n".join(lines))
    (HERE / "results.json").write_text(json.dumps({"stage1_s": stage1_s, "runs": runs}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
