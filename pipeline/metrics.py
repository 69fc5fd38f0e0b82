"""Per-step metrics to JSONL (for scripts and plots), TensorBoard and, when configured, Weights & Biases (for
people), from rank 0 only.

Each JSONL line is ``{"step": int, "time": unix_seconds, <name>: float, ...}``; names use ``/`` to group
(``train/loss``, ``rollout/reward_mean``). Resumed runs append; lines with a step at or past the resume point
are dropped first so the file never holds a step twice. A resumed run logs to the same W&B run (its id is kept in
OUT/wandb_run_id); W&B ignores steps it already holds, so steps past the resumed checkpoint that a killed run
logged keep their first values there (metrics.jsonl holds the resumed ones).
"""

import importlib.util
import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

WANDB_MODES = ("online", "offline")


@dataclass
class WandbConfig:
    project: str = ""
    """Weights & Biases project to log to; empty: no W&B (metrics.jsonl and TensorBoard are always written)."""
    entity: str = ""
    """W&B team or user; empty: the logged-in account's default."""
    mode: str = "online"
    """online, or offline: the run is kept under OUT/wandb/ for `wandb sync` later (clusters without internet)."""
    name: str = ""
    """Run name; empty: the output directory's name."""

    def validate(self, where: str) -> None:
        """Raise ValueError naming the field (`where` is the section, e.g. `logging.wandb`), before any work."""
        if self.mode not in WANDB_MODES:
            raise ValueError(f"{where}.mode={self.mode!r}; valid: {', '.join(WANDB_MODES)}")
        if self.project and importlib.util.find_spec("wandb") is None:
            raise ValueError(f"{where}.project is set but wandb is not installed: pip install wandb "
                             "(bash scripts/install.sh installs it)")


class MetricsWriter:
    def __init__(self, out_dir: str | os.PathLike, *, enabled: bool = True, resume_step: int | None = None,
                 wandb: WandbConfig | None = None, run_config: dict | None = None):
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self._tb = None
        self._wandb = None
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
        if wandb is not None and wandb.project:
            self._wandb = _start_wandb(wandb, Path(out_dir), run_config or {})

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
        if self._wandb is not None:
            self._wandb.log(clean, step=int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _start_wandb(cfg: WandbConfig, out: Path, run_config: dict):
    import wandb

    id_file = out / "wandb_run_id"
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = uuid.uuid4().hex[:12]
        tmp = id_file.with_suffix(".tmp")
        tmp.write_text(run_id + "\n")
        tmp.replace(id_file)
    return wandb.init(project=cfg.project, entity=cfg.entity or None, name=cfg.name or out.resolve().name,
                      mode=cfg.mode, dir=str(out), id=run_id, resume="allow", config=run_config)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """All records of a metrics.jsonl (a file, or a directory holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.exists():
        raise FileNotFoundError(f"no metrics file at {p}; expected a metrics.jsonl written by MetricsWriter")
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
