"""One full RL step (generate -> reward -> train -> weight sync) in samples/s: ours vs TRL's GRPOTrainer
(loss_type="dr_grpo", no reward scaling, no KL), same tiny model, questions, group size, batch and generation
budget, on this machine in one run. Also reports the share of our step spent in weight sync.

    bash bench/setup_trl.sh                       # once: TRL in its own venv
    .venv/bin/python bench/rl_step_throughput.py [--steps 8] [--prompts 4] [--group 8] [--max-new 64]

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.common import write_results  # noqa: E402


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


def run_ours(model: Path, questions: Path, out: Path, *, ranks: int, generator: str, args) -> dict:
    cfg = dict(model_dir=str(model), output_dir=str(out), train_questions=str(questions), template="none",
               generator=generator, questions_per_step=args.prompts, group_size=args.group,
               max_new_tokens=args.max_new, steps=args.steps + args.warmup, eval_every=10**6,
               checkpoint_every=10**6, micro_batch_size=args.prompts * args.group // ranks, lr=1e-6, seed=0,
               log_generations=0)
    config = out.with_suffix(".json")
    config.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // ranks)))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks),
                    "-m", "pipeline.rl", "--config", str(config)], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["step"] > args.warmup]
    parts = ("time/generate_s", "time/reward_s", "time/train_s", "time/sync_s")
    step_s = [sum(r[k] for k in parts) for r in rows]
    median_step = statistics.median(step_s)
    return {
        "ranks": ranks, "generator": generator, "step_s": step_s, "median_step_s": median_step,
        "samples_per_s": args.prompts * args.group / median_step,
        "sync_share": statistics.median(r["time/sync_s"] / s for r, s in zip(rows, step_s)),
        "parts_median_s": {k: statistics.median(r[k] for r in rows) for k in parts},
    }


def run_trl(model: Path, questions: Path, out: Path, args) -> dict:
    trl_python = REPO / ".venv-trl" / "bin" / "python"
    if not trl_python.exists():
        raise SystemExit("TRL venv missing: run `bash bench/setup_trl.sh` first")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", CUDA_VISIBLE_DEVICES="")
    subprocess.run([str(trl_python), str(REPO / "bench" / "trl_grpo_step.py"), str(model), str(questions), str(out),
                    "--prompts", str(args.prompts), "--group", str(args.group), "--max-new", str(args.max_new),
                    "--steps", str(args.steps + args.warmup)], cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    step_s = result["step_s"][args.warmup:]
    return {"step_s": step_s, "median_step_s": statistics.median(step_s),
            "samples_per_s": args.prompts * args.group / statistics.median(step_s)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="measured steps (after warm-up)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--ours", default="vllm:2,vllm:1,torch:2", help="generator:ranks runs of ours")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, questions = make_inputs(tmp)
        trl = run_trl(model, questions, tmp / "trl.json", args)
        ours = []
        for spec in args.ours.split(","):
            generator, ranks = spec.split(":")
            ours.append(run_ours(model, questions, tmp / f"ours-{generator}-{ranks}", ranks=int(ranks),
                                 generator=generator, args=args))
    for o in ours:
        o["ratio_vs_trl"] = o["samples_per_s"] / trl["samples_per_s"]
    results = {"settings": vars(args), "trl": trl, "ours": ours, "targets": {"ratio_vs_trl": 1.5, "sync_share": 0.05}}
    path = write_results("rl_step_throughput", results)
    print(f"TRL GRPOTrainer: {trl['samples_per_s']:.1f} samples/s (median step {trl['median_step_s']:.2f}s)")
    for o in ours:
        print(f"ours {o['generator']} x{o['ranks']} ranks: {o['samples_per_s']:.1f} samples/s -> "
              f"{o['ratio_vs_trl']:.2f}x TRL; weight sync {100 * o['sync_share']:.1f}% of the step; "
              f"parts {json.dumps({k.split('/')[1]: round(v, 3) for k, v in o['parts_median_s'].items()})}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
