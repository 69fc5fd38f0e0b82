"""Tokenization throughput: `python -m data_prep tokenize` with worker processes vs the tokenizer's own batch
encode in one process, on the same generated corpus in the same run.

    python bench/tokenize_throughput.py [--megabytes 50] [--workers 2] [--repeats 1]

Generates a seeded ~50 MB jsonl corpus of worked math problems (several per document) and the tiny tokenizer,
then measures tokens/s of
- baseline: one process calling ``tokenizer(batch)["input_ids"]`` (1000 documents per call) with the tokenizers
  library's own threads off (``TOKENIZERS_PARALLELISM=false``): one core, as "in one process" means; reading the
  jsonl is not timed, writing nothing;
- the command, end to end (interpreter start, imports, reading, encoding, writing .bin/.idx), and its own timer
  (from reading the first record to the renamed output; excludes interpreter start and imports);
- for context, the same batch encode with the library's threads on (default settings; uses every core).
Token counts include the EOD the command appends. CPU seconds and the load average before each measurement are
recorded too: on a shared machine other jobs' load moves the wall-clock ratios, not the CPU cost per token.
Writes bench/results/tokenize_throughput-<date>-<machine>.json.
Target: command >= 1.5x the one-process baseline with 2 workers on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import write_results  # noqa: E402

_BASELINE = r"""
import json, sys, time
from transformers import AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
texts = [json.loads(line)["text"] for line in open(sys.argv[2], encoding="utf-8")]
start = time.perf_counter()
tokens = 0
for i in range(0, len(texts), 1000):
    tokens += sum(len(ids) + 1 for ids in tokenizer(texts[i : i + 1000])["input_ids"])  # + EOD, as the command
print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - start, "documents": len(texts)}))
"""


def make_corpus(path: Path, megabytes: float, problems_per_doc: int, seed: int) -> int:
    from data_prep.synthetic_problems import GENERATORS, LEVELS

    rng = random.Random(seed)
    target, size, docs = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            text = "\n\n".join(GENERATORS[rng.choice(LEVELS)](rng).document(boxed=True) for _ in range(problems_per_doc))
            line = json.dumps({"text": text}) + "\n"
            f.write(line)
            size += len(line.encode())
            docs += 1
    return docs


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_baseline(tokenizer: Path, corpus: Path, parallel: bool) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if parallel:
        env.pop("TOKENIZERS_PARALLELISM", None)
    else:
        env["TOKENIZERS_PARALLELISM"] = "false"
    load, cpu = os.getloadavg()[0], _children_cpu_seconds()
    out = subprocess.run([sys.executable, "-c", _BASELINE, str(tokenizer), str(corpus)], env=env, check=True,
                         capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["process_cpu_seconds"] = _children_cpu_seconds() - cpu  # whole process, imports and reading included
    result["load_average_before"] = load
    return result


def run_command(tokenizer: Path, corpus: Path, prefix: Path, workers: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "data_prep", "tokenize", "--corpus", "jsonl", "--data-files", str(corpus),
           "--tokenizer", str(tokenizer), "--output-prefix", str(prefix), "--workers", str(workers), "--force",
           "--no-progress"]
    load, cpu = os.getloadavg()[0], _children_cpu_seconds()
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    cpu = _children_cpu_seconds() - cpu
    summary = json.loads(Path(f"{prefix}.summary.json").read_text())
    return {"tokens": summary["tokens"], "documents": summary["documents"], "wall_seconds": wall,
            "internal_seconds": summary["seconds"], "tokens_per_s_end_to_end": summary["tokens"] / wall,
            "tokens_per_s_internal": summary["tokens_per_second"], "process_cpu_seconds": cpu,
            "load_average_before": load, "command": " ".join(cmd)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--megabytes", type=float, default=50.0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--problems-per-doc", type=int, default=8)
    p.add_argument("--repeats", type=int, default=1, help="alternate baseline and command this many times")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from data_prep.synthetic import generate, SyntheticConfig
    from data_prep.tiny_tokenizer import train_tiny_tokenizer

    with tempfile.TemporaryDirectory(prefix="tokbench-") as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.jsonl"
        docs = make_corpus(corpus, args.megabytes, args.problems_per_doc, args.seed)
        tokenizer = train_tiny_tokenizer(generate(SyntheticConfig(seed=args.seed))[0], tmp / "tokenizer")
        print(f"corpus: {corpus.stat().st_size / 1e6:.1f} MB, {docs} documents", flush=True)
        rounds = []
        for r in range(args.repeats):
            baseline = run_baseline(tokenizer, corpus, parallel=False)
            command = run_command(tokenizer, corpus, tmp / "out", args.workers)
            threaded = run_baseline(tokenizer, corpus, parallel=True)
            assert command["tokens"] == baseline["tokens"], (command["tokens"], baseline["tokens"])
            rounds.append({"baseline_one_process": baseline, "command": command, "baseline_threaded": threaded})
            print(f"round {r}: baseline {baseline['tokens_per_s']:,.0f} tok/s; command {command['tokens_per_s_internal']:,.0f}"
                  f" tok/s (own timer), {command['tokens_per_s_end_to_end']:,.0f} tok/s end to end; threaded encode "
                  f"{threaded['tokens_per_s']:,.0f} tok/s", flush=True)

    def ratio(key_cmd, base="baseline_one_process"):
        return sorted(r["command"][key_cmd] / r[base]["tokens_per_s"] for r in rounds)[len(rounds) // 2]

    results = {
        "corpus_megabytes": args.megabytes, "documents": docs, "tokens": rounds[0]["command"]["tokens"],
        "workers": args.workers, "rounds": rounds,
        "ratio_command_internal_vs_one_process": ratio("tokens_per_s_internal"),
        "ratio_command_end_to_end_vs_one_process": ratio("tokens_per_s_end_to_end"),
        "ratio_command_internal_vs_threaded_encode": ratio("tokens_per_s_internal", "baseline_threaded"),
        "target_ratio": 1.5,
    }
    path = write_results("tokenize_throughput", results)
    print(json.dumps({k: v for k, v in results.items() if k.startswith("ratio")}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
