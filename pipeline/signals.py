"""SIGTERM / SIGUSR1 -> "checkpoint and exit cleanly", agreed by every rank.

SLURM sends USR1 (with `--signal=USR1@secs`) before the time limit and TERM on preemption/requeue. The handler
only sets a flag; training loops call `should_exit()` at step boundaries, which all-reduces the flag so all
ranks stop at the same step (a signal may reach only some of them).
"""

from __future__ import annotations

import signal

from megatron_ext.distributed import any_rank
from megatron_ext.helper_processes import EXIT_SIGNALS


class ExitSignalHandler:
    def __init__(self, signals: tuple[int, ...] = EXIT_SIGNALS):
        self.received: int | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.received = signum

    def should_exit(self, also: bool = False) -> bool:
        """Collective when torch.distributed is initialised: True on every rank if any rank got a signal (or
        passed `also=True`, e.g. its own time limit ran out: one all-reduce decides both)."""
        return any_rank(self.received is not None or also)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
