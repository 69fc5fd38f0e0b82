"""Per-rank CPU settings. megatron_ext.cpu_malloc: with the thresholds set, memory freed at the end of a step is
reused by the next one without page faults (without them glibc trims it and faults it in again); the user's own
settings win. Threads per rank are the node's cores over the node's own ranks, not the job's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STEPS = """
import json, random, resource, sys, torch
from megatron_ext import cpu_malloc
applied = cpu_malloc.retain_freed_memory() if sys.argv[1] == "tuned" else False
rng = random.Random(0)
sizes = [rng.choice([1, 2, 3, 5, 7]) << 18 for _ in range(40)]  # 1-7 MiB each, 161 MiB in all

def step():  # a step's activations: a third freed as soon as used, the rest at the step's end
    kept = []
    for i, size in enumerate(sizes):
        block = torch.empty(size).fill_(1.0)
        if i % 3:
            kept.append(block)
    return len(kept)

step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(json.dumps({"applied": applied,
                  "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20}))
"""


def run(mode: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.cli
def test_freed_step_memory_is_reused_without_page_faults():
    plain, tuned = run("plain"), run("tuned")
    assert tuned["applied"]
    pages_per_step = (161 << 20) // 4096
    assert plain["faults_per_step"] > 1000, plain  # glibc's default trims the heap: the next step faults it back
    assert tuned["faults_per_step"] * 3 < plain["faults_per_step"], (tuned, plain)
    assert tuned["faults_per_step"] < pages_per_step / 20, tuned


@pytest.mark.cli
def test_the_users_glibc_settings_are_left_alone():
    assert not run("tuned", MALLOC_TRIM_THRESHOLD_="0")["applied"]
    assert not run("tuned", GLIBC_TUNABLES="glibc.malloc.mmap_threshold=65536")["applied"]


def test_threads_per_rank_count_this_nodes_ranks_not_the_jobs(monkeypatch):
    import torch

    from megatron_ext.distributed import set_cpu_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    try:
        monkeypatch.setenv("WORLD_SIZE", "8")  # 2 nodes x 4 ranks
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
        set_cpu_threads()
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("LOCAL_WORLD_SIZE")  # outside torchrun: the whole world is here
        set_cpu_threads()
        assert torch.get_num_threads() == 1
        set_cpu_threads(3)  # the config's explicit setting wins
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
