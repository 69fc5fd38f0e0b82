import _posixsubprocess
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
pytest_plugins = ["slurm_cluster", "slurm_jobs"]  # their fixtures (the local cluster, the jobs on it) for every test


def run_torchrun(script: str | Path, nproc: int, *args: str, timeout: int = 300, env: dict | None = None):
    """Run a worker script (or `"-m", module, ...`) under torchrun (gloo, CPU); fail the test on failure."""
    target = [str(script)] if str(script) != "-m" else ["-m"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           *target, *map(str, args)]
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}:{REPO / 'tests'}", HF_HUB_OFFLINE="1")
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"torchrun {script} x{nproc} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def read_rank_results(out_dir: Path, nproc: int) -> list[dict]:
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(nproc)]


@pytest.fixture
def torchrun():
    return run_torchrun


# A test that starts any process carries one of these markers; every other test is in the fast tier (`-m fast`).
PROCESS_MARKERS = ("cli", "multirank", "workers", "kernels", "vllm", "slurm", "multinode", "real_model", "gpu")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:  # by marker name: `item.keywords` also holds parameter ids such as "fast"
        if not any(item.get_closest_marker(m) for m in PROCESS_MARKERS):
            item.add_marker(pytest.mark.fast)
        if item.get_closest_marker("gpu") and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@contextlib.contextmanager
def _no_process_starts(item):
    """A fast-tier test (and the fixtures it sets up) may not fork or exec: the tier's promise is checked."""
    if not item.get_closest_marker("fast"):
        yield
        return
    fork_exec = subprocess._fork_exec

    def refuse(*args, **kwargs):
        argv = args[0] if args and isinstance(args[0], (list, tuple)) else []
        if len(argv) > 1 and all("version" in os.fsdecode(a) for a in argv[1:]):
            return fork_exec(*args, **kwargs)  # a tool's version query (torch's extension loader asks c++ and ninja)
        command = " ".join(map(os.fsdecode, argv[:3]))
        raise AssertionError(f"{item.nodeid} starts a process ({command}) but carries none of the markers "
                             f"{PROCESS_MARKERS}: mark it, so that the fast tier stays free of processes")

    patches = [(_posixsubprocess, "fork_exec"), (subprocess, "_fork_exec"), (os, "fork"), (os, "posix_spawn"),
               (os, "posix_spawnp")]
    saved = [(module, name, getattr(module, name)) for module, name in patches]
    for module, name in patches:
        setattr(module, name, refuse)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _no_process_starts(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _no_process_starts(item):
        yield
