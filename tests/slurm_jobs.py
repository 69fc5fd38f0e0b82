"""The tiny stage-two run that the SLURM tests submit through slurm/rl.sh, and helpers around its jobs.

    from slurm_jobs import jobs, policy, reference   # fixtures (plus slurm_cluster from slurm_cluster)

`policy` is the run's config (a tiny warm policy that is sometimes right, so resumed runs must restore real
state); `reference` is that run as one uninterrupted single-node job (2 ranks), the metrics every preempted,
requeued or multi-node run of the same config must reproduce exactly.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from slurm_cluster import cancel, job_state, sbatch, wait_for_job

# The local nodes have 2 CPUs and no GPUs: these override the A100 #SBATCH defaults, as users would.
LOCAL_NODE = ("--gpus-per-node=0", "--cpus-per-task=2", "--time=15")
TWO_NODES = ("--partition=multi", "--nodes=2", *LOCAL_NODE)
RL_SETTINGS = dict(template="none", engine="torch", questions_per_step=4, group_size=4, max_new_tokens=16,
                   steps=8, checkpoint_every=2, micro_batch_size=4, minibatches_per_step=1, lr=3e-4, seed=3,
                   log_generations=-1,
                   grade_timeout_s=30.0)  # a loaded machine must not turn grading into timeouts
JOB_TIMEOUT = 420


@pytest.fixture(scope="session")
def policy(tmp_path_factory):
    """The tiny run's config file."""
    import torch
    from tiny_models import save_warm_addition_model

    root = tmp_path_factory.mktemp("policy")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same weights; on a busy 2-core machine 2 threads were 6x slower (142 s vs 24 s)
    try:
        model = save_warm_addition_model(root / "model", steps=40)
    finally:
        torch.set_num_threads(threads)
    config = root / "rl.json"
    config.write_text(json.dumps(dict(RL_SETTINGS, model_dir=str(model), train_questions=str(questions(root)))))
    return config


def questions(root: Path) -> Path:
    from tiny_models import addition_questions

    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in addition_questions(48, seed=1)))
    return path


@pytest.fixture
def jobs(slurm_cluster):
    """Job ids a test submits; whatever is still queued when it ends is cancelled."""
    submitted: list[int] = []
    yield submitted
    if submitted:
        cancel(slurm_cluster, *submitted)


def job_env(cluster_env: dict, **knobs: str) -> dict:
    env = {k: v for k, v in cluster_env.items()
           if k not in ("CONFIG", "OUTPUT_DIR", "MODEL_DIR", "EXTRA_ARGS", "LOG_DIR", "DRY_RUN", "CONTAINER_IMAGE")}
    env.update({"NPROC_PER_NODE": "2", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **knobs})
    return env


def submit(script: str, env: dict, jobs: list, config: Path, out: Path, *sbatch_args: str, **knobs: str) -> tuple[int, Path]:
    """`sbatch SBATCH_ARGS slurm/SCRIPT` (default: the single local node) of CONFIG into OUT; its log is OUT.log."""
    log = out.parent / f"{out.name}.log"
    env = job_env(env, CONFIG=str(config), OUTPUT_DIR=str(out), **knobs)
    job = sbatch(env, *(sbatch_args or LOCAL_NODE), f"--output={log}", f"slurm/{script}")
    jobs.append(job)
    return job, log


def submit_rl(env: dict, jobs: list, config: Path, out: Path, *sbatch_args: str, **knobs: str) -> tuple[int, Path]:
    return submit("rl.sh", env, jobs, config, out, *sbatch_args, **knobs)


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if not k.startswith("time")} for row in rows]  # time*: wall clock


def wait_for_step(out: Path, job: int, env: dict, log: Path, step: int = 1, timeout: float = 300) -> None:
    """Until rank 0 has logged `step` (the job is then mid-run: more steps and a final export remain)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = out / "metrics.jsonl"
        if path.exists() and any(json.loads(line)["step"] >= step for line in path.read_text().splitlines() if line):
            return
        assert job_state(env, job) in ("PENDING", "RUNNING", "CONFIGURING"), log.read_text()[-4000:] if log.exists() else ""
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not reach step {step} in {timeout}s")


def checkpoint_step_on_exit(log_text: str) -> int:
    found = re.findall(r"\[rl\] exit requested: checkpoint at step (\d+) saved", log_text)
    assert found, f"the ranks never checkpointed on the signal:\n{log_text[-4000:]}"
    return int(found[0])


@pytest.fixture(scope="session")
def reference(slurm_cluster, policy, tmp_path_factory):
    """`sbatch slurm/rl.sh` of the tiny run on one node, uninterrupted: (job, final state, output dir, log)."""
    out = tmp_path_factory.mktemp("rl") / "reference"
    job, log = submit_rl(slurm_cluster, [], policy, out)
    state = wait_for_job(slurm_cluster, job, JOB_TIMEOUT, log)
    return job, state, out, log
