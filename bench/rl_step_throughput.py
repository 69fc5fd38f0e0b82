"""One full RL step (generate -> reward -> train -> weight sync) in samples/s: ours vs TRL's GRPOTrainer
(loss_type="dr_grpo", no reward scaling, no KL), same tiny model, questions, group size, batch and generation
budget, on this machine in one run. Also reports the share of our step spent in weight sync.

    bash bench/setup_trl.sh                       # once: TRL in its own venv
    .venv/bin/python bench/rl_step_throughput.py [--steps 8] [--warmup 2] [--prompts 4] [--group 8] [--max-new 64]
        [--ours torch:1,torch:2,vllm:1] [--rounds 1] [--no-trl] [--model DIR --questions JSONL] [--micro-batch N]

Both sides: prompts x group completions per step from one generation call, at most max-new tokens each, the
same binary reward (our RewardGrader; a completion cut at the budget scores 0), one optimizer step per RL step,
fp32. A step's time is wall clock from the end of one step to the end of the next (ours: the `time` of
consecutive metrics.jsonl rows; TRL: consecutive `on_step_end` callbacks), after `--warmup` steps; the ratio
is the median over `--rounds` rounds (each round runs TRL, then each of ours, so drift on a shared machine hits
both). The weight-sync share is our `time/sync_s` over that step time. CPU seconds per step (ours: the ranks and
their graders, polled as each step ends; TRL: its process) are recorded too, as `cpu_ratio_vs_trl` = TRL's over
ours: on a machine shared with other jobs the wall-clock ratio mostly measures the other jobs (TRL's two OpenMP
threads stall whenever one is descheduled; our ranks are single-threaded), the CPU ratio much less so.
`--no-trl` measures ours alone.

Writes bench/results/rl_step_throughput-<date>-<machine>.json. Target on CPU: >= 1.5x TRL's samples/s,
weight sync <= 5% of the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.common import TRL_PYTHON, trl_available, write_results  # noqa: E402

PARTS = ("time/generate_s", "time/reward_s", "time/train_s", "time/sync_s")


def make_inputs(root: Path, n_questions: int = 64) -> tuple[Path, Path]:
    from tiny_models import addition_questions, save_char_tokenizer, save_random_llama, tiny_llama_config

    model = root / "model"
    # the shape NOTES.md measured TRL with: hidden 256, 6 layers, 8 heads / 4 KV heads (5.25M params)
    save_random_llama(model, tiny_llama_config(hidden_size=256, head_dim=32, num_attention_heads=8,
                                               num_key_value_heads=4, intermediate_size=704, num_layers=6,
                                               vocab_size=1024, initializer_range=0.02), seed=0)
    save_char_tokenizer(model, vocab_size=1024)
    questions = root / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in addition_questions(n_questions, seed=0)))
    return model, questions


def _cpu_seconds(procs) -> float:
    """User + system CPU seconds of these processes and their live children (our ranks and their graders)."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            family = [p, *p.children(recursive=True)]
        except psutil.Error:  # already gone
            continue
        for q in family:
            try:
                t = q.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


def _run(cmd: list[str], env: dict, log: Path, what: str, metrics: Path | None = None) -> dict[int, float]:
    """Run to completion (raising with the output's tail on failure). With `metrics`, also return the CPU seconds
    the ranks had used when each metrics.jsonl row appeared ({rows: cpu_s}), polled every 50 ms."""
    import psutil

    marks: dict[int, float] = {}
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        ranks = None
        while proc.poll() is None:
            if metrics is not None and metrics.exists():
                n = metrics.read_text().count("\n")
                if ranks is None and n >= 1:
                    try:
                        ranks = [c for c in psutil.Process(proc.pid).children(recursive=True)
                                 if "pipeline.rl" in c.cmdline() and "torch.distributed.run" not in c.cmdline()]
                    except psutil.Error:
                        ranks = []
                if ranks and n not in marks:
                    marks[n] = _cpu_seconds(ranks)
            time.sleep(0.05)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}); last lines of its output:\n{tail}")
    return marks


def run_ours(model: Path, questions: Path, out: Path, *, ranks: int, engine: str, args) -> dict:
    cfg = dict(model_dir=str(model), output_dir=str(out), train_questions=str(questions), template="none",
               engine=engine, questions_per_step=args.prompts, group_size=args.group,
               max_new_tokens=args.max_new, steps=args.steps + args.warmup, eval_every=10**6,
               checkpoint_every=10**6, micro_batch_size=args.micro_batch or args.prompts * args.group // ranks,
               minibatches_per_step=1, lr=1e-6, seed=0, log_generations=0)  # one update per generate, as TRL's
    config = out.with_suffix(".json")
    config.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // ranks)))
    marks = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                  "-m", "pipeline.rl", "--config", str(config)], env, out.with_suffix(".log"),
                 f"ours ({engine} x{ranks})", metrics=out / "metrics.jsonl")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    pairs = [(a, b) for a, b in zip(rows, rows[1:]) if b["step"] > args.warmup]
    step_s = [b["time"] - a["time"] for a, b in pairs]
    measured = [b for _, b in pairs]
    median_step = statistics.median(step_s)
    # rows are steps 1..N (no evaluation row): row count n appears at the end of step n
    cpu_s = [marks[b["step"]] - marks[a["step"]] for a, b in pairs if a["step"] in marks and b["step"] in marks]
    return {
        "ranks": ranks, "engine": engine, "step_s": step_s, "median_step_s": median_step,
        "samples_per_s": args.prompts * args.group / median_step,
        "cpu_s_per_step": statistics.median(cpu_s) if cpu_s else None, "cpu_s": cpu_s,
        "sync_share": statistics.median(r["time/sync_s"] / s for r, s in zip(measured, step_s)),
        "parts_median_s": {k: statistics.median(r[k] for r in measured) for k in PARTS},
        "completions_per_step": args.prompts * args.group,
        "tokens_per_completion": statistics.fmean(r["rollout/response_len_mean"] for r in measured),
        "truncation_rate": statistics.fmean(r["rollout/truncation_rate"] for r in measured),
    }


def run_trl(model: Path, questions: Path, out: Path, args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    env.pop("OMP_NUM_THREADS", None)  # one process: torch's default, every core (as our ranks share them)
    _run([str(TRL_PYTHON), str(REPO / "bench" / "trl_grpo_step.py"), str(model), str(questions), str(out),
          "--prompts", str(args.prompts), "--group", str(args.group), "--max-new", str(args.max_new),
          "--steps", str(args.steps + args.warmup), "--micro-batch", str(args.micro_batch)], env, out.with_suffix(".log"), "TRL GRPOTrainer")
    result = json.loads(out.read_text())
    step_s = result["step_s"][args.warmup:]
    seen = result["seen_per_step"][args.warmup:]
    timers = result["timers_per_step"][args.warmup:]
    names = sorted({k for t in timers for k in t})
    completions = [s["completions"] for s in seen]
    cpu_s = result["cpu_s"][args.warmup:]
    return {
        "step_s": step_s, "median_step_s": statistics.median(step_s),
        "samples_per_s": args.prompts * args.group / statistics.median(step_s),
        "cpu_s_per_step": statistics.median(cpu_s), "cpu_s": cpu_s,
        "parts_median_s": {k: statistics.median(t.get(k, 0.0) for t in timers) for k in names},
        "completions_per_step": statistics.median(completions),
        "reward_calls_per_step": statistics.median(s["reward_calls"] for s in seen),
        "tokens_per_completion": sum(s["generated_tokens"] for s in seen) / max(1, sum(completions)),
        "truncation_rate": sum(s["truncated"] for s in seen) / max(1, sum(completions)),
        "torch_threads": result["torch_threads"], "versions": result["versions"], "config": result["config"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="measured steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--ours", default="torch:1,torch:2,vllm:1", help="engine:ranks runs of ours")
    p.add_argument("--rounds", type=int, default=1, help="alternations of TRL and ours")
    p.add_argument("--no-trl", action="store_true", help="measure ours only (no TRL venv)")
    p.add_argument("--micro-batch", type=int, default=0, help="completions per forward/backward on each side (ours: "
                   "per rank; the rest by gradient accumulation, still one optimizer step per generate); 0: all of a "
                   "rank's at once. At SmolLM2-135M x 128 new tokens, 64 (TRL) or 32 per rank (ours) at once "
                   "exceed 24 GiB")
    p.add_argument("--model", default="", help="HF model directory instead of the tiny 5.25M-parameter Llama (e.g. "
                   "SmolLM2-135M-Instruct from `python -m data_prep.real_assets`); needs --questions")
    p.add_argument("--questions", default="", help="{question, answer} jsonl for --model (e.g. the synthetic "
                   "rl_train.jsonl of `python -m data_prep synthetic`)")
    args = p.parse_args()
    if not args.no_trl and not trl_available():
        raise SystemExit("TRL venv missing: run `bash bench/setup_trl.sh` first (or pass --no-trl)")
    specs = [(g, int(r)) for g, r in (s.split(":") for s in args.ours.split(","))]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if bool(args.model) != bool(args.questions):
            raise SystemExit("--model and --questions go together")
        model, questions = (Path(args.model), Path(args.questions)) if args.model else make_inputs(tmp)
        for i in range(args.rounds):
            trl = None if args.no_trl else run_trl(model, questions, tmp / f"trl-{i}.json", args)
            ours = [run_ours(model, questions, tmp / f"ours-{g}-{r}-{i}", ranks=r, engine=g, args=args)
                    for g, r in specs]
            for o in ours:
                o["ratio_vs_trl"] = o["samples_per_s"] / trl["samples_per_s"] if trl else None
                o["cpu_ratio_vs_trl"] = (trl["cpu_s_per_step"] / o["cpu_s_per_step"]
                                         if trl and o["cpu_s_per_step"] else None)
            rounds.append({"trl": trl, "ours": ours})
            if trl:
                print(f"round {i}: TRL {trl['samples_per_s']:.1f} samples/s; "
                      + "; ".join(f"{o['engine']} x{o['ranks']} {o['samples_per_s']:.1f} ({o['ratio_vs_trl']:.2f}x)"
                                  for o in ours), flush=True)

    def med(xs):
        xs = [x for x in xs if x is not None]
        return statistics.median(xs) if xs else None

    trl_summary = None if args.no_trl else {
        **rounds[-1]["trl"], "samples_per_s": med(r["trl"]["samples_per_s"] for r in rounds),
        "median_step_s": med(r["trl"]["median_step_s"] for r in rounds),
        "cpu_s_per_step": med(r["trl"]["cpu_s_per_step"] for r in rounds)}
    ours_summary = []
    for j in range(len(specs)):
        runs = [rd["ours"][j] for rd in rounds]
        ours_summary.append({**runs[-1], "samples_per_s": med(x["samples_per_s"] for x in runs),
                             "median_step_s": med(x["median_step_s"] for x in runs),
                             "sync_share": med(x["sync_share"] for x in runs),
                             "ratio_vs_trl": med(x["ratio_vs_trl"] for x in runs),
                             "cpu_s_per_step": med(x["cpu_s_per_step"] for x in runs),
                             "cpu_ratio_vs_trl": med(x["cpu_ratio_vs_trl"] for x in runs)})
    results = {"settings": vars(args), "trl": trl_summary, "ours": ours_summary, "rounds": rounds,
               "targets": {"ratio_vs_trl": 1.5, "sync_share": 0.05}}
    path = write_results("rl_step_throughput" + (f"-{Path(args.model).name}" if args.model else ""), results)
    if trl_summary:
        print(f"TRL GRPOTrainer: {trl_summary['samples_per_s']:.1f} samples/s (median step "
              f"{trl_summary['median_step_s']:.2f}s, {trl_summary['cpu_s_per_step']:.2f} CPU s, "
              f"{trl_summary['tokens_per_completion']:.1f} tokens/completion); "
              f"parts {json.dumps({k.split('.')[-1]: round(v, 3) for k, v in trl_summary['parts_median_s'].items()})}")
    for o in ours_summary:
        ratio = (f"{o['ratio_vs_trl']:.2f}x TRL (CPU seconds per step: {o['cpu_ratio_vs_trl']:.2f}x less); "
                 if o["ratio_vs_trl"] and o["cpu_ratio_vs_trl"] else "")
        print(f"ours {o['engine']} x{o['ranks']} ranks: {o['samples_per_s']:.1f} samples/s -> {ratio}"
              f"weight sync {100 * o['sync_share']:.1f}% of the step; {o['tokens_per_completion']:.1f} tokens/completion; "
              f"parts {json.dumps({k.split('/')[1]: round(v, 3) for k, v in o['parts_median_s'].items()})}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
