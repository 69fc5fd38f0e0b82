"""Shared pieces of the stage-one tests: a tiny tokenized math corpus, the tiny test config, process helpers."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Small enough that a 2-rank torchrun run of a few steps takes seconds; shaped so TP=2 and PP=2 both fit.
TEST_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 16}


def make_math_corpus(out_dir: Path, num_docs: int = 3000, seed: int = 0) -> dict:
    """A char tokenizer plus PREFIX.bin/.idx of short arithmetic documents, each ended by EOS (= EOD)."""
    import numpy as np
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tiny_models import save_char_tokenizer
    from transformers import AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    tok_dir = save_char_tokenizer(out_dir / "tokenizer")
    tok = AutoTokenizer.from_pretrained(tok_dir)
    rng = random.Random(seed)
    texts = []
    for _ in range(num_docs):
        a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice("+-")
        r = a + b if op == "+" else a - b
        texts.append(f"Question: What is {a} {op} {b}?\nAnswer: {a} {op} {b} = {r}. The answer is \\boxed{{{r}}}.")
    prefix = out_dir / "math"
    builder = IndexedDatasetBuilder(str(prefix) + ".bin", dtype=np.int32)
    for ids in tok(texts)["input_ids"]:
        ids = ids + [tok.eos_token_id]
        builder.add_document(torch.tensor(ids), [len(ids)])
    builder.finalize(str(prefix) + ".idx")
    return {"tokenizer": str(tok_dir), "prefix": str(prefix), "eos": tok.eos_token_id}


def data_prep_corpus(out_dir: Path, num_docs: int = 2000, seed: int = 0) -> dict:
    """The project's own path: `data_prep` synthetic math documents + tokenizer, tokenized to PREFIX.bin/.idx."""
    from data_prep.synthetic import make_synthetic_dataset
    from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus
    from transformers import AutoTokenizer

    data = make_synthetic_dataset(out_dir / "data", seed=seed, num_pretrain_docs=num_docs, num_train_questions=10,
                                  num_test_questions=10)
    prefix = out_dir / "tokens" / "synthetic"
    tokenize_corpus(TokenizeConfig(corpus="jsonl", tokenizer=str(data.tokenizer), output_prefix=str(prefix),
                                   data_files=(str(data.pretrain),), progress=False, workers=1))
    eos = AutoTokenizer.from_pretrained(data.tokenizer).eos_token_id
    return {"tokenizer": str(data.tokenizer), "prefix": str(prefix), "eos": eos}


def tiny_run_config(corpus: dict, out_dir: Path, **sections) -> dict:
    """The tiny test run as a config dict; `sections` update whole sections, e.g. schedule={...}."""
    cfg = {
        "output_dir": str(out_dir),
        "seed": 7,
        "model": {"preset": "tiny", "overrides": dict(TEST_MODEL), "tokenizer_dir": corpus["tokenizer"]},
        "data": {"blend": [corpus["prefix"]], "seq_length": 32, "split": "95,5,0"},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 1, "weight_decay": 0.1},
        "schedule": {"train_iters": 6, "global_batch_size": 8, "micro_batch_size": 2, "eval_interval": 3,
                     "eval_iters": 2},
        "checkpoint": {"interval": 2, "keep_last": 2},
        "parallel": {"threads_per_rank": 1},
        "logging": {"progress_bar": False, "peak_flops_per_rank": 1e9},
    }
    for name, values in sections.items():
        if isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **values}
        else:
            cfg[name] = values
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(json.dumps(cfg, indent=2))
    return path


def env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}:{REPO / 'tests'}", HF_HUB_OFFLINE="1",
                TOKENIZERS_PARALLELISM="false")


def launch(nproc: int, config: Path, *args: str) -> subprocess.Popen:
    """Start `pipeline.pretrain` under torchrun (nproc > 1) or as one plain process, in its own session; its
    output goes to CONFIG.log (`.log` attribute), so a full pipe never blocks it."""
    if nproc == 1:
        cmd = [sys.executable, "-m", "pipeline.pretrain", "--config", str(config), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "pipeline.pretrain", "--config", str(config), *args]
    log = config.with_suffix(".log")
    with log.open("a") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=f, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: int = 300) -> subprocess.CompletedProcess:
    """Wait for a launched run; its output since launch is the CompletedProcess's stdout."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise AssertionError(f"pretrain run timed out after {timeout}s:\n{proc.log.read_text()[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.log.read_text(), "")


def run(nproc: int, config: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    log = config.with_suffix(".log")
    log.unlink(missing_ok=True)
    return finish(launch(nproc, config, *args), timeout)


def metrics(out_dir: Path) -> dict[int, dict]:
    """step -> record of OUT/metrics.jsonl (records of one step merged)."""
    by_step: dict[int, dict] = {}
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            by_step.setdefault(record["step"], {}).update(record)
    return by_step


def losses(out_dir: Path, key: str = "train/loss") -> list[float]:
    m = metrics(out_dir)
    return [m[s][key] for s in sorted(m) if key in m[s]]
