"""Per-step metrics to JSONL (for scripts and plots) and TensorBoard (for people), from rank 0 only.

Each JSONL line is ``{"step": int, "time": unix_seconds, <name>: float, ...}``; names use ``/`` to group
(``train/loss``, ``rollout/reward_mean``). Resumed runs append; lines with a step at or past the resume point
are dropped first so the file never holds a step twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


class MetricsWriter:
    def __init__(self, out_dir: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] < resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
        except ImportError:  # tensorboard is optional for library users
            self._tb = None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        record = {"step": int(step), "time": time.time(), **{k: (v if math.isfinite(v) else None) for k, v in clean.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics.jsonl (a file, or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"no metrics file at {p}; expected a metrics.jsonl written by MetricsWriter")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
