"""Summarise the GRPO vs Dr. GRPO length experiment as markdown: response length of incorrect and correct
responses at the start and end of training, and the change.  python docs/length_bias/summarize.py GRPO_DIR DRGRPO_DIR"""

import json
import statistics
import sys
from pathlib import Path


def window_mean(rows, key, steps):
    values = [r[key] for r in rows if r["step"] in steps and r.get(key) is not None]
    return statistics.fmean(values) if values else float("nan")


def main():
    lines = ["| run | steps | incorrect len, first 10 steps | last 10 steps | change | correct len change | "
             "reward first 10 | last 10 | eval acc start | end |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, run_dir in zip(("GRPO", "Dr. GRPO"), sys.argv[1:3]):
        rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in rows if "rollout/reward_mean" in r]
        last = train[-1]["step"]
        first10, last10 = set(range(1, 11)), set(range(last - 9, last + 1))
        inc0, inc1 = (window_mean(train, "rollout/response_len_incorrect", s) for s in (first10, last10))
        cor0, cor1 = (window_mean(train, "rollout/response_len_correct", s) for s in (first10, last10))
        rew0, rew1 = (window_mean(train, "rollout/reward_mean", s) for s in (first10, last10))
        evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
        lines.append(f"| {label} | {last} | {inc0:.1f} | {inc1:.1f} | {inc1 - inc0:+.1f} | {cor1 - cor0:+.1f} | "
                     f"{rew0:.3f} | {rew1:.3f} | {evals[0]:.3f} | {evals[-1]:.3f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
