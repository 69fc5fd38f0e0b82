"""The local SLURM cluster for tests marked `slurm`, and small helpers around sbatch / sacct / scontrol.

    from slurm_cluster import slurm_cluster          # the session fixture; it yields the env with SLURM_CONF

`slurm_cluster` starts the cluster of tests/slurm/start_local_slurm.sh (munge, slurmctld, slurmdbd + MariaDB, a
slurmd for the single node `localhost` of partition `debug` and one per node of partition `multi`, node1 and node2,
each in its own network namespace; apt-installs them on a fresh machine, ~15 s) unless it is already up, and yields a
copy of os.environ with SLURM_CONF set. A cluster that is already running is used as it is (other sessions may have
jobs on it), so tests must not depend on its gres: they pass `--gpus-per-node=0` explicitly.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "tests" / "slurm" / "start_local_slurm.sh"
PREFIX = Path(os.environ.get("SLURM_LOCAL_PREFIX", "/tmp/local-slurm"))
SLURM_CONF = PREFIX / "etc" / "slurm.conf"
MULTI_NODES = ("node1", "node2")  # partition `multi` (start_local_slurm.sh's default MULTI_NODES=2)
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
            "DEADLINE"}


def _cluster_up(env: dict) -> bool:
    try:
        ping = subprocess.run(["scontrol", "ping"], env=env, capture_output=True, text=True, timeout=10)
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], env=env, capture_output=True, text=True,
                               timeout=10)
        accounting = subprocess.run(["sacct", "-n", "-X", "-S", "now"], env=env, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    states = dict(line.split() for line in nodes.stdout.splitlines() if line.strip())
    usable = set(states) >= {"localhost", *MULTI_NODES} and all(
        state.rstrip("*") in ("idle", "mixed", "allocated", "completing") for state in states.values())
    return "is UP" in ping.stdout and usable and accounting.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    env = dict(os.environ, SLURM_CONF=str(SLURM_CONF))
    if not (SLURM_CONF.exists() and _cluster_up(env)):
        if os.geteuid() != 0:
            pytest.skip("the local SLURM cluster is not running and starting it needs root")
        proc = subprocess.run(["bash", str(START_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"{START_SCRIPT} start failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    yield env


def sbatch(env: dict, *args: str, cwd: Path = REPO) -> int:
    """Submit and return the job id (`sbatch --parsable ARGS`); fails the test with sbatch's message."""
    proc = subprocess.run(["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"sbatch {' '.join(args)} failed: {proc.stderr}")
    return int(proc.stdout.strip().split(";")[0])


def in_queue(env: dict, job: int) -> bool:
    out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
    return bool(out.stdout.strip())


def sacct_records(env: dict, job: int, fields: str = "JobID,JobName,State,ExitCode,Start,End,Reason") -> list[dict]:
    """The job's allocation records (-X), every run of a requeued job included (-D), oldest first."""
    names = fields.split(",")
    out = subprocess.run(["sacct", "-n", "-X", "-D", "-P", "-j", str(job), "-o", fields], env=env,
                         capture_output=True, text=True, timeout=30)
    return [dict(zip(names, line.split("|"))) for line in out.stdout.splitlines() if line.strip()]


def final_state(env: dict, job: int, timeout: float = 60) -> str:
    """The job's last state as accounting records it (the first word: 'CANCELLED by 0' -> 'CANCELLED')."""
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        records = sacct_records(env, job)
        state = records[-1]["State"].split()[0] if records else ""
        if state in TERMINAL:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job} has no final state in sacct after {timeout}s (last: {state!r})")


def wait_for_job(env: dict, job: int, timeout: float, log: Path | None = None) -> str:
    """Wait until the job has left the queue (requeues included) and return its final sacct state."""
    deadline = time.time() + timeout
    while in_queue(env, job):
        if time.time() > deadline:
            subprocess.run(["scancel", str(job)], env=env, timeout=30)
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise AssertionError(f"job {job} still in the queue after {timeout}s (cancelled it)\n{tail}")
        time.sleep(0.5)
    return final_state(env, job)


def job_state(env: dict, job: int) -> str:
    """Current state from the controller (PENDING, RUNNING, ...); '' once the job has left its memory."""
    out = subprocess.run(["squeue", "-h", "-j", str(job), "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def cancel(env: dict, *jobs: int) -> None:
    subprocess.run(["scancel", *map(str, jobs)], env=env, capture_output=True, timeout=30)
