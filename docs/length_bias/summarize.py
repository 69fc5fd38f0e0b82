"""Summarise the GRPO vs Dr. GRPO length experiment as markdown: response length of incorrect and correct
responses in the first and last 10 steps, and the change, per run and averaged per algorithm over seeds.

    python docs/length_bias/summarize.py grpo-s7=DIR drgrpo-s7=DIR [...]     (NAME=DIR, NAME = ALGO-sSEED)
"""

import json
import statistics
import sys
from pathlib import Path

LABELS = {"grpo": "GRPO", "drgrpo": "Dr. GRPO"}
COLUMNS = ("incorrect_first", "incorrect_last", "incorrect_change", "correct_change", "reward_first",
           "reward_last", "eval_start", "eval_end")


def window_mean(rows, key, steps):
    values = [r[key] for r in rows if r["step"] in steps and r.get(key) is not None]
    return statistics.fmean(values) if values else float("nan")


def summarize(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "rollout/reward_mean" in r]
    last = train[-1]["step"]
    first10, last10 = set(range(1, 11)), set(range(last - 9, last + 1))
    inc0, inc1 = (window_mean(train, "rollout/response_len_incorrect", s) for s in (first10, last10))
    cor0, cor1 = (window_mean(train, "rollout/response_len_correct", s) for s in (first10, last10))
    evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    return {"steps": last, "incorrect_first": inc0, "incorrect_last": inc1, "incorrect_change": inc1 - inc0,
            "correct_change": cor1 - cor0, "reward_first": window_mean(train, "rollout/reward_mean", first10),
            "reward_last": window_mean(train, "rollout/reward_mean", last10), "eval_start": evals[0],
            "eval_end": evals[-1]}


def row(label: str, s: dict) -> str:
    return (f"| {label} | {s['incorrect_first']:.1f} | {s['incorrect_last']:.1f} | {s['incorrect_change']:+.2f} | "
            f"{s['correct_change']:+.2f} | {s['reward_first']:.3f} | {s['reward_last']:.3f} | {s['eval_start']:.3f} | "
            f"{s['eval_end']:.3f} |")


def main():
    runs = {}
    for arg in sys.argv[1:]:
        name, run_dir = arg.split("=", 1)
        algo, seed = name.rsplit("-s", 1)
        runs.setdefault(algo, {})[seed] = summarize(Path(run_dir))
    steps = next(iter(next(iter(runs.values())).values()))["steps"]
    lines = [f"Response length (tokens) over {steps} steps: means of the first and last 10 steps' rollouts.", "",
             "| run | incorrect len, first 10 | last 10 | incorrect change | correct change | reward first 10 | "
             "last 10 | eval acc start | end |", "|---|---|---|---|---|---|---|---|---|"]
    for algo, by_seed in runs.items():
        lines += [row(f"{LABELS.get(algo, algo)}, seed {seed}", s) for seed, s in by_seed.items()]
    for algo, by_seed in runs.items():
        mean = {k: statistics.fmean(s[k] for s in by_seed.values()) for k in COLUMNS}
        lines.append(row(f"**{LABELS.get(algo, algo)}, mean of {len(by_seed)}**", mean))
    if {"grpo", "drgrpo"} <= set(runs):
        diffs = [runs["grpo"][seed]["incorrect_change"] - runs["drgrpo"][seed]["incorrect_change"]
                 for seed in runs["grpo"] if seed in runs["drgrpo"]]
        lines += ["", "Incorrect-length growth, GRPO minus Dr. GRPO, per seed: "
                  + ", ".join(f"{d:+.2f}" for d in diffs) + " tokens"
                  + (f" (mean {statistics.fmean(diffs):+.2f}, sd {statistics.stdev(diffs):.2f})" if len(diffs) > 1 else "")]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
