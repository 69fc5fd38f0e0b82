"""The recipe's console: each running task's progress lines, followed from its log file.

NeMo-Run sends a task's output to a log file (under the experiment directory: `<task>/**/combined.log` on the
local executor, `<task>/log*.out` under SLURM) and shows only a spinner. `TaskLogFollower` reads those files while
the tasks run and prints, per task, where its full log is, the project's own tagged lines (`[rl] ...`), the progress
bars at most every `progress_every_s` seconds (and at 100%), and a failed task's last lines. Remote SLURM
(`SSHTunnel`) logs are not local: their directory is printed instead.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TAGS = ("data", "pretrain", "rl", "eval", "report", "tasks", "stage1", "stage2")
"""The tags of the lines the project's tasks print for people (`[rl] done: ...`); other output stays in the log."""
PROGRESS_BARS = ("pretrain", "Dr. GRPO", "eval")
"""The descriptions of the tasks' own progress bars (tqdm); other bars (weights loading, shards) stay in the log."""

_BREAKS = re.compile(r"[\r\n]|\[default\d+\]:")  # torchrun's rank prefix also starts a line after tqdm's last
_TAGGED = re.compile(rf"^\[({'|'.join(TAGS)})\] ")
_BAR = re.compile(rf"^({'|'.join(re.escape(b) for b in PROGRESS_BARS)})[\w ]*:\s+(\d+)%\|[^|]*\|\s*(.*)$")


@dataclass
class LineFilter:
    """Turns one task's raw log text, fed in pieces as it grows, into the lines worth showing."""

    progress_every_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _partial: str = ""
    _last_bar_at: float = field(default=-1e18)
    _last_bar: str = ""

    def feed(self, text: str, final: bool = False) -> list[str]:
        pieces = _BREAKS.split(self._partial + text)
        self._partial = "" if final else pieces.pop()
        shown = []
        for piece in pieces:
            line = piece.strip()
            bar = _BAR.match(line)
            if bar:
                name, percent, rest = bar.groups()
                line = f"{line.split(':')[0]}: {percent}% {rest}"
                now = self.clock()
                # tqdm redraws a finished bar once more on close: the same line twice
                due = now - self._last_bar_at >= self.progress_every_s or (percent == "100" and line != self._last_bar)
                if due and line != self._last_bar:
                    shown.append(line)
                    self._last_bar_at, self._last_bar = now, line
            elif _TAGGED.match(line) or line.startswith("error: "):
                shown.append(line)
        return shown


def task_log_files(job_dir: str | Path) -> list[Path]:
    """A task's log files in its NeMo-Run job directory, oldest first (one per requeue or node on SLURM)."""
    root = Path(job_dir)
    files = [*root.glob("nemo_run/*/*/*/combined.log"), *root.glob("log*.out")]
    return sorted(files, key=lambda p: (p.stat().st_mtime, str(p)))


@dataclass
class _LogFile:
    filter: LineFilter
    offset: int = 0
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


@dataclass
class _Followed:
    name: str
    job_dir: Path
    remote: bool
    files: dict = field(default_factory=dict)
    announced: bool = False


class TaskLogFollower:
    """Follows the given tasks' logs on a background thread until `stop()`; prints through `emit`."""

    def __init__(self, emit: Callable[[str], None], poll_s: float = 1.0, progress_every_s: float = 30.0):
        self.emit = emit
        self.poll_s = poll_s
        self.progress_every_s = progress_every_s
        self._tasks: dict[str, _Followed] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def follow(self, name: str, job_dir: str | Path, remote: bool = False) -> None:
        with self._lock:
            if name not in self._tasks:
                self._tasks[name] = _Followed(name, Path(job_dir), remote)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="task-log-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop following, after showing what the logs gained since the last poll."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.poll(final=True)

    def log_files(self, name: str) -> list[Path]:
        task = self._tasks.get(name)
        return [] if task is None or task.remote else task_log_files(task.job_dir)

    def tail(self, name: str, lines: int = 20) -> list[str]:
        """The last lines of the task's newest log (ranks' prefixes kept: they say whose line it is)."""
        files = self.log_files(name)
        if not files:
            return []
        text = files[-1].read_bytes()[-64 * 1024:].decode("utf-8", "replace")
        return [line for line in re.split(r"[\r\n]", text) if line.strip()][-lines:]

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.poll()

    def poll(self, final: bool = False) -> None:
        with self._lock:
            tasks = list(self._tasks.values())
        for task in tasks:
            if task.remote:
                if not task.announced:
                    self.emit(f"{task.name} | logs on the cluster under {task.job_dir}")
                    task.announced = True
                continue
            for path in task_log_files(task.job_dir):
                if path not in task.files:
                    self.emit(f"{task.name} | log: {path}")
                    task.files[path] = _LogFile(LineFilter(self.progress_every_s))
                log = task.files[path]
                with open(path, "rb") as f:
                    f.seek(log.offset)
                    data = f.read()
                log.offset += len(data)
                for line in log.filter.feed(log.decoder.decode(data, final=final), final=final):
                    self.emit(f"{task.name} | {line}")
