"""Helper processes of a rank (the checkpoint writer's manager, the grading workers) that outlive the signals of a
SLURM job step and die with the rank that started them.

SLURM sends EXIT_SIGNALS to every process of a job step, meaning "checkpoint and exit" for the ranks
(pipeline/signals.py); a helper killed by one would break the checkpoint or the grades the ranks are finishing.
A helper is started with the signals blocked (a child inherits the mask, so none can kill it before it ignores
them) and calls `become_helper` first thing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

EXIT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
"""SIGTERM (preemption, requeue, scancel) and SIGUSR1 (`--signal=USR1@secs` before the time limit)."""


@contextlib.contextmanager
def exit_signals_blocked():
    """Start helpers inside this: they inherit the blocked mask; this thread gets the signals once it is restored."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def become_helper(parent_pid: int) -> bool:
    """In the helper: ignore EXIT_SIGNALS and be killed when the parent's starting thread dies (PR_SET_PDEATHSIG on
    Linux, so a helper stuck in C code is never orphaned). False if the parent died already: exit then."""
    for sig in EXIT_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    return os.getppid() == parent_pid
