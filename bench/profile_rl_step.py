"""Profile our CPU RL step with py-spy at the RL-step benchmark's settings (a development tool, not a benchmark).

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_rl_step.py [--engine vllm] [--ranks 2] [--steps 12] [--warmup 3] [--out DIR]

Launches `pipeline.rl` like bench/rl_step_throughput.py (tiny model, 4 prompts x 8, 64 new tokens), waits for the
warm-up steps, then samples every rank with `py-spy record --format raw` until the run ends. Prints, over all
ranks, the share of samples in each phase of the step (generate / reward / train / sync / other) and the
functions with the largest inclusive and self shares; the collapsed stacks stay in DIR for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# phase of a sample: the first of these functions found in its stack (outermost first)
PHASES = (
    ("generate", ("generate (pipeline/rl/vllm_engine.py", "generate (pipeline/rl/torch_engine.py")),
    ("reward", ("grade_batch (pipeline/rl/reward.py", "all_gather_rollouts (pipeline/rl/rollout.py")),
    ("train", ("train (pipeline/rl/learner.py", "build_policy_batch (pipeline/rl/rollout.py")),
    ("sync", ("update_weights (pipeline/rl/", "export_weights (pipeline/rl/learner.py")),
    ("metrics/log", ("log (pipeline/metrics.py", "rollout_metrics (pipeline/rl/stats.py",
                     "_log_generations (pipeline/rl/controller.py", "any_rank (megatron_ext/distributed.py",
                     "sum_over_ranks (megatron_ext/distributed.py")),
)


def _read_stacks(path: Path) -> collections.Counter:
    stacks = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            stacks[stack] += int(count)
    return stacks


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)"; drop the line number, shorten the path
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", str(REPO) + "/"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"


def summarize(stacks: collections.Counter, top: int = 25) -> dict:
    total = sum(stacks.values()) or 1
    phases = collections.Counter()
    inclusive = collections.Counter()
    self_time = collections.Counter()
    for stack, n in stacks.items():
        frames = [_frame_name(f) for f in stack.split(";") if f]
        phase = "other"
        for label, needles in PHASES:
            if any(any(needle in f for needle in needles) for f in frames):
                phase = label
                break
        phases[phase] += n
        for f in set(frames):
            inclusive[f] += n
        if frames:
            self_time[frames[-1]] += n
    share = lambda c: [(k, round(v / total, 4)) for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "phases": dict((k, round(v / total, 4)) for k, v in phases.most_common()),
            "inclusive": share(inclusive), "self": share(self_time)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="vllm")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3, help="steps run before sampling starts")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="include native (C/C++) frames")
    p.add_argument("--out", default=None, help="keep the collapsed stacks here")
    args = p.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    from bench.rl_step_throughput import make_inputs

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="rlprof-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, questions = make_inputs(tmp)
        run = tmp / "run"
        cfg = dict(model_dir=str(model), output_dir=str(run), train_questions=str(questions), template="none",
                   engine=args.engine, questions_per_step=args.prompts, group_size=args.group,
                   max_new_tokens=args.max_new, steps=args.steps, eval_every=10**6, checkpoint_every=10**6,
                   micro_batch_size=args.prompts * args.group // args.ranks, minibatches_per_step=1,
                   lr=1e-6, seed=0, log_generations=0)
        (tmp / "cfg.json").write_text(json.dumps(cfg))
        env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
                   OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.ranks)))
        proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                                 str(args.ranks), "-m", "pipeline.rl", "--config", str(tmp / "cfg.json")], cwd=REPO,
                                env=env, stdout=open(out_dir / "run.log", "w"), stderr=subprocess.STDOUT)
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= args.warmup):
            if proc.poll() is not None:
                raise SystemExit(f"the run ended early (rc {proc.returncode}); see {out_dir / 'run.log'}")
            time.sleep(0.2)
        import psutil

        ranks = [c for c in psutil.Process(proc.pid).children(recursive=True)
                 if "pipeline.rl" in " ".join(c.cmdline()) and "torch.distributed.run" not in " ".join(c.cmdline())]
        spies = [subprocess.Popen([py_spy, "record", "--pid", str(r.pid), "--rate", str(args.rate), "--format", "raw",
                                   "--output", str(out_dir / f"rank{i}.txt"), "--nonblocking"]
                                  + (["--native"] if args.native else []),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, r in enumerate(ranks)]
        t0 = time.time()
        start_rows = len(metrics.read_text().splitlines())
        proc.wait()
        for s in spies:
            s.wait()
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        measured = rows[start_rows:]
    stacks = collections.Counter()
    for f in out_dir.glob("rank*.txt"):
        stacks.update(_read_stacks(f))
    summary = summarize(stacks)
    parts = ("time/generate_s", "time/reward_s", "time/train_s", "time/sync_s")
    summary["timers_mean_s"] = {k: sum(r[k] for r in measured) / max(1, len(measured)) for k in parts}
    summary["sampled_s"] = time.time() - t0
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("samples", "phases", "timers_mean_s")}, indent=2))
    for kind in ("inclusive", "self"):
        print(f"-- top {kind} (share of all samples, all ranks)")
        for name, share in summary[kind]:
            print(f"{100 * share:6.1f}%  {name}")
    print(f"stacks and summary in {out_dir}")


if __name__ == "__main__":
    main()
