"""Run every benchmark, one after another, and write one results file plus a markdown table.

    .venv/bin/python -m bench                      # the same as: .venv/bin/python bench/run_all.py
    .venv/bin/python -m bench --quick              # small sizes: a smoke run (minutes), figures not comparable
    .venv/bin/python -m bench --only rl_step,learner    # or --skip tokenize; --no-trl-setup; --list

Each benchmark runs as its own subprocess (never two at once, so they do not steal each other's cores), writes
its JSON into a scratch directory, and the runner collects them into
bench/results/<date>-<machine>.json and bench/results/<date>-<machine>.md (``-quick`` appended with --quick):
machine, package versions (TRL's venv too), each figure with its baseline measured in the same run, the ratio,
the target and whether it is met, the wall time and load average around each benchmark, and why any benchmark
failed or was skipped. The RL-step benchmark needs TRL in its own venv: the runner creates it with
bench/setup_trl.sh when missing (needs the package index; --no-trl-setup skips that), and if TRL still cannot
be imported it measures our RL step alone (weight-sync share, no ratio) and says so.
Exit status: 0 when every selected benchmark ran (met targets or not), 1 when any failed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import RESULTS_DIR, TRL_PYTHON, machine_info, machine_tag, trl_available  # noqa: E402


def _row(benchmark: str, figure: str, value, unit: str, baseline: str | None = None, baseline_value=None,
         ratio=None, target: str | None = None, met: bool | None = None) -> dict:
    return {"benchmark": benchmark, "figure": figure, "value": value, "unit": unit, "baseline": baseline,
            "baseline_value": baseline_value, "ratio": ratio, "target": target, "met": met}


def _learner_rows(r: dict) -> list[dict]:
    return [_row("learner", f"Megatron fwd+bwd ({r['preset']}, {r['batch']}x{r['seq']}, {r['dtype']})",
                 r["megatron_tokens_per_s"], "tokens/s", "transformers Llama", r["hf_tokens_per_s"],
                 r["ratio_megatron_vs_hf"], f">= {r['target_ratio']}x", r["ratio_megatron_vs_hf"] >= r["target_ratio"])]


def _rollout_rows(r: dict) -> list[dict]:
    engines, base = r["engines"], r["engines"].get("hf_generate", {}).get("tokens_per_s")
    s = r["settings"]
    rows = []
    for name, label in (("vllm", "vLLM engine"), ("torch", "torch engine")):
        if name in engines:
            rows.append(_row("rollout", f"{label} ({s['prompts']} prompts x {s['n']}, {s['max_new']} new tokens)",
                             engines[name]["tokens_per_s"], "tokens/s", "transformers generate", base,
                             engines[name].get("ratio_vs_hf_generate")))
    return rows


def _rl_step_rows(r: dict) -> list[dict]:
    s, trl, t = r["settings"], r.get("trl"), r["targets"]
    rows = []
    for o in r["ours"]:
        what = f"{o['engine']} x{o['ranks']} ranks, {s['prompts']}x{s['group']}, {s['max_new']} new tokens"
        ratio = o.get("ratio_vs_trl")
        rows.append(_row("rl_step", f"RL step ({what})", o["samples_per_s"], "samples/s",
                         "TRL GRPOTrainer dr_grpo" if trl else "TRL (not run)", trl["samples_per_s"] if trl else None,
                         ratio, f">= {t['ratio_vs_trl']}x", None if ratio is None else ratio >= t["ratio_vs_trl"]))
        if trl and o.get("cpu_ratio_vs_trl"):
            rows.append(_row("rl_step", f"RL step CPU seconds ({o['engine']} x{o['ranks']}; ratio: TRL's / ours)",
                             o["cpu_s_per_step"], "CPU s/step", "TRL", trl["cpu_s_per_step"], o["cpu_ratio_vs_trl"]))
        rows.append(_row("rl_step", f"weight sync share ({o['engine']} x{o['ranks']})", o["sync_share"],
                         "of step", None, None, None, f"<= {t['sync_share']:.0%}", o["sync_share"] <= t["sync_share"]))
    return rows


def _rl_step_details(r: dict) -> list[str]:
    """What makes the RL-step comparison like for like, as measured: per side, the work done per step."""
    lines = ["", "RL step, per side (medians over the measured steps):", "",
             "| run | step s | CPU s/step | completions/step | tokens/completion | truncated | parts (s) |",
             "|---|---|---|---|---|---|---|"]
    sides = ([("TRL GRPOTrainer", r["trl"])] if r.get("trl") else []) + [
        (f"ours {o['engine']} x{o['ranks']}", o) for o in r["ours"]]
    for name, x in sides:
        parts = ", ".join(f"{k.split('/')[-1].split('.')[-1].removesuffix('_s')} {v:.3f}"
                          for k, v in x["parts_median_s"].items() if v >= 0.0005)
        cpu = f"{x['cpu_s_per_step']:.2f}" if x.get("cpu_s_per_step") else "—"
        lines.append(f"| {name} | {x['median_step_s']:.3f} | {cpu} | {x['completions_per_step']:g} | "
                     f"{x['tokens_per_completion']:.1f} | {x['truncation_rate']:.0%} | {parts} |")
    return lines


def _pretrain_rows(r: dict) -> list[dict]:
    c = r["config"]
    what = f"{c['preset']}, gbs {c['global_batch_size']} x seq {c['seq_length']}"
    return [
        _row("pretrain", f"stage-one loop ({what})", r["loop"]["tokens_per_s"], "tokens/s",
             "bare fwd/bwd/step", r["baseline_bare"]["tokens_per_s"], r["loop_vs_bare_ratio"], ">= 0.9x",
             r["loop_vs_bare_ratio"] >= 0.9),
        _row("pretrain", "stage-one loop MFU", r["loop"]["mfu"], "of measured matmul peak", "bare MFU",
             r["baseline_bare"]["mfu"]),
    ]


def _tokenize_rows(r: dict) -> list[dict]:
    rounds = r["rounds"]
    base = statistics.median(x["baseline_one_process"]["tokens_per_s"] for x in rounds)
    rows = [_row("tokenize", f"data_prep tokenize ({r['workers']} workers, {r['corpus_megabytes']:g} MB), own timer",
                 statistics.median(x["command"]["tokens_per_s_internal"] for x in rounds), "tokens/s",
                 "one-process batch encode", base, r["ratio_command_internal_vs_one_process"],
                 f">= {r['target_ratio']}x", r["ratio_command_internal_vs_one_process"] >= r["target_ratio"]),
            _row("tokenize", "data_prep tokenize, end to end (interpreter start included)",
                 statistics.median(x["command"]["tokens_per_s_end_to_end"] for x in rounds), "tokens/s",
                 "one-process batch encode", base, r["ratio_command_end_to_end_vs_one_process"])]
    return rows


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    rows: Callable[[dict], list[dict]]
    result_name: str


BENCHMARKS = (
    Benchmark("learner", "learner_throughput.py", (), ("--seq", "128", "--batch", "4", "--repeats", "3"),
              _learner_rows, "learner_throughput"),
    Benchmark("rollout", "rollout_throughput.py", (),
              ("--prompts", "4", "--n", "4", "--max-new", "32", "--repeats", "1"), _rollout_rows, "rollout_throughput"),
    Benchmark("rl_step", "rl_step_throughput.py", ("--rounds", "2"),
              ("--steps", "2", "--warmup", "1", "--ours", "torch:1,vllm:1"), _rl_step_rows, "rl_step_throughput"),
    Benchmark("pretrain", "pretrain_throughput.py", (),
              ("--seq", "128", "--gbs", "8", "--mbs", "4", "--steps", "2", "--rounds", "1"), _pretrain_rows,
              "pretrain_throughput"),
    Benchmark("tokenize", "tokenize_throughput.py", ("--repeats", "3"), ("--megabytes", "2"), _tokenize_rows,
              "tokenize_throughput"),
)


def _trl_versions() -> dict:
    code = ("import json; from importlib import metadata as m; print(json.dumps({p: m.version(p) for p in "
            "('trl', 'transformers', 'torch', 'accelerate', 'datasets')}))")
    out = subprocess.run([str(TRL_PYTHON), "-c", code], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def ensure_trl(allow_setup: bool) -> tuple[bool, str]:
    """(ready, message): TRL's venv importable, creating it with bench/setup_trl.sh when allowed."""
    if trl_available():
        return True, "TRL venv ready"
    if not allow_setup:
        return False, "TRL venv missing and --no-trl-setup given: run `bash bench/setup_trl.sh`"
    print("[bench] TRL venv missing: bash bench/setup_trl.sh (a few minutes, needs the package index)", flush=True)
    proc = subprocess.run(["bash", str(REPO / "bench" / "setup_trl.sh")], cwd=REPO, capture_output=True, text=True)
    if proc.returncode == 0 and trl_available():
        return True, "TRL venv created by bench/setup_trl.sh"
    tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
    return False, f"bash bench/setup_trl.sh failed (exit {proc.returncode}): {tail}"


def _load() -> float:
    return os.getloadavg()[0]


def run_one(bench: Benchmark, args: list[str], scratch: Path, timeout_s: float) -> dict:
    """Run one benchmark script, echoing its output; returns status, timings and its results JSON."""
    out_dir = scratch / bench.name
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BENCH_RESULTS_DIR=str(out_dir), PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, str(REPO / "bench" / bench.script), *args]
    print(f"\n[bench] {bench.name}: {shlex.join(['python', 'bench/' + bench.script, *args])}", flush=True)
    record = {"command": shlex.join(cmd), "load_before": _load()}
    tail: deque[str] = deque(maxlen=60)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, errors="replace")
    timed_out = threading.Event()

    def kill():  # a hung benchmark may print nothing: a timer, not the output loop, enforces the limit
        timed_out.set()
        os.killpg(proc.pid, signal.SIGKILL)

    watchdog = threading.Timer(timeout_s, kill)
    watchdog.start()
    try:
        for line in proc.stdout:  # the scripts print little: progress bars and warnings are what shows here
            tail.append(line.rstrip("\n"))
            print(f"  {line}", end="", flush=True)
        proc.wait()
    finally:
        watchdog.cancel()
    record.update(wall_s=time.perf_counter() - start, load_after=_load(), returncode=proc.returncode)
    files = sorted(out_dir.glob(f"{bench.result_name}-*.json"))
    if timed_out.is_set():
        record.update(status="failed", reason=f"timed out after {timeout_s:.0f} s")
    elif proc.returncode != 0 or not files:
        record.update(status="failed", reason=f"exit {proc.returncode}" + ("" if files else ", no results file"))
    else:
        result = json.loads(files[-1].read_text())
        result.pop("machine", None)  # the same machine block is at the top of the summary
        record.update(status="ok", result=result)
        try:
            record["rows"] = bench.rows(result)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:  # a figure missing: keep the raw result
            record.update(status="failed", reason=f"could not read its figures: {type(e).__name__}: {e}")
    if record["status"] != "ok":
        record["log_tail"] = list(tail)
        print(f"[bench] {bench.name} FAILED: {record['reason']}", flush=True)
    return record


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit.startswith("of"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float) and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(summary: dict) -> str:
    m = summary["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    lines = [f"# Benchmarks {summary['date'][:10]} on {summary['machine_tag']}"
             + (" (quick smoke run: small sizes, not comparable)" if summary["quick"] else ""), "",
             f"- machine: {m['cpu']}, {m['cpu_count']} cores, {m.get('cuda') or 'no GPU'}; {m['platform']}; "
             f"Python {m['python']}",
             f"- versions: {versions}"]
    if summary.get("trl_versions"):
        lines.append("- TRL venv: " + ", ".join(f"{k} {v}" for k, v in summary["trl_versions"].items()))
    lines += [f"- command: `{summary['command']}`", f"- load average before the run: {summary['load_before']:.2f}"]
    # load averages include the suite's own processes (a 2-rank benchmark alone keeps it near 2), hence 1.5 x cores
    loads = [summary["load_before"]] + [b["load_before"] for b in summary["benchmarks"].values() if "load_before" in b]
    if max(loads) > 1.5 * (m["cpu_count"] or 1):
        lines.append(f"- **the machine was busy** (load average up to {max(loads):.1f} on {m['cpu_count']} cores): "
                     "wall-clock figures are noisy, and a multi-threaded process stalls whenever one of its threads is "
                     "descheduled: TRL's trainer is one such process, our RL ranks are single-threaded, so the RL-step "
                     "ratios overstate ours; rerun on an idle machine")
    lines += ["", "Each ratio is against its baseline measured in the same run on this machine.", "",
              "| benchmark | figure | ours | baseline (same run) | ratio | target | met |",
              "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        base = f"{row['baseline']}: {_fmt(row['baseline_value'], row['unit'])}" if row["baseline"] else "—"
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "—"
        met = {True: "yes", False: "**no**", None: "—"}[row["met"]]
        unit = "" if row["unit"].startswith("of") else f" {row['unit']}"
        lines.append(f"| {row['benchmark']} | {row['figure']} | {_fmt(row['value'], row['unit'])}{unit} | {base} | "
                     f"{ratio} | {row['target'] or '—'} | {met} |")
    rl = summary["benchmarks"].get("rl_step", {})
    if rl.get("status") == "ok":
        lines += _rl_step_details(rl["result"])
    lines += ["", "| benchmark | status | wall | load average before -> after | note |", "|---|---|---|---|---|"]
    for name, b in summary["benchmarks"].items():
        if b["status"] == "skipped":
            lines.append(f"| {name} | skipped | — | — | {b['reason']} |")
            continue
        note = b.get("reason", "") or b.get("note", "")
        lines.append(f"| {name} | {b['status']} | {b['wall_s']:.0f} s | {b['load_before']:.2f} -> "
                     f"{b['load_after']:.2f} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    p.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    p.add_argument("--no-trl-setup", action="store_true", help="never create the TRL venv")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default 7200, quick 1800)")
    p.add_argument("--out-dir", default=str(RESULTS_DIR))
    p.add_argument("--list", action="store_true", help="print the benchmarks and their arguments, run nothing")
    args = p.parse_args(argv)
    names = [b.name for b in BENCHMARKS]
    only = [n for n in args.only.split(",") if n]
    skip = [n for n in args.skip.split(",") if n]
    unknown = sorted(set(only + skip) - set(names))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; valid: {names}")
    selected = [b for b in BENCHMARKS if (not only or b.name in only) and b.name not in skip]
    if args.list:
        for b in selected:
            print(f"{b.name:9s} python bench/{b.script} {shlex.join(b.quick if args.quick else b.full)}")
        return 0
    timeout_s = args.timeout or (1800.0 if args.quick else 7200.0)
    command = shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])])
    summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "quick": args.quick,
               "command": command, "machine_tag": machine_tag(), "machine": machine_info(),
               "load_before": _load(), "benchmarks": {}, "rows": []}
    failed = False
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        for b in selected:
            bench_args = list(b.quick if args.quick else b.full)
            note = ""
            if b.name == "rl_step":
                ready, note = ensure_trl(not args.no_trl_setup)
                if ready:
                    summary["trl_versions"] = _trl_versions()
                else:
                    print(f"[bench] rl_step: {note}; measuring our RL step alone (no TRL ratio)", flush=True)
                    bench_args.append("--no-trl")
                    note = f"TRL not run: {note}"
            record = run_one(b, bench_args, Path(scratch), timeout_s)
            if note:
                record["note"] = note
            summary["benchmarks"][b.name] = record
            summary["rows"] += record.get("rows", [])
            failed |= record["status"] != "ok"
    for b in BENCHMARKS:
        if b.name not in summary["benchmarks"]:
            summary["benchmarks"][b.name] = {"status": "skipped", "reason": "not selected (--only / --skip)"}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{summary['date'][:10]}-{summary['machine_tag']}" + ("-quick" if args.quick else "")
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(json_path)
    md_path.write_text(markdown(summary))
    print("\n" + markdown(summary))
    print(f"[bench] wrote {json_path} and {md_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
