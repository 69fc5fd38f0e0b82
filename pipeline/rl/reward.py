"""Binary math reward for RL rollouts: 1.0 when the response's final answer equals the gold answer, else 0.0.

    from pipeline.rl.reward import RewardGrader, math_reward
    with RewardGrader(num_workers=4, timeout_s=1.0, verifier="fast") as grader:
        rewards, stats = grader.grade_batch(responses, golds, "r1", truncated=finished_by_length)
    math_reward(response, gold, "qwen_math")          # one answer, through a shared one-worker grader
    math_reward(response, gold, "r1", verifier="math_verify")

The verifier (``pipeline.rl.grading.VERIFIERS``: the authors' ``"fast"`` (default) and ``"math_verify"``, or this
project's ``"lenient"``) decides which answer a response gives and what equals the gold answer. Per response: a
response cut at the length limit scores 0 (the authors' rule); the verifier pulls out the final answer (per
template: the last ``\\boxed{}``, or the ``<answer>`` tag for ``r1``); answers its cheap string check already
matches score 1 right here; everything else goes to a worker process running the verifier's full check
(sympy, math-verify).
Each worker grade has a hard wall-clock limit: a worker past its deadline is killed and replaced and the answer
scores 0; so does an answer whose worker crashed. Both are counted in the stats, and the run goes on.
There is no format reward.

Workers are fresh interpreters (``python -c``) speaking JSON lines on stdin/stdout: nothing is unpickled, nothing
of the parent (torch, vLLM, its threads, its ``__main__``) is inherited or re-imported, and a warm standby
worker takes over the moment one is killed.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import multiprocessing.connection
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from data_prep.templates import get_template
from megatron_ext.helper_processes import become_helper, exit_signals_blocked
from pipeline.rl.grading import DEFAULT_VERIFIER, EQUIVALENCE_STAGES, check_stages, get_verifier


@dataclass(frozen=True)
class GraderConfig:
    num_workers: int = 2
    """Grading worker processes; grades run in parallel across them. One more is kept warm as a standby."""
    timeout_s: float = 1.0
    """Hard wall-clock limit for one answer in a worker (the authors use 1 s); past it the worker is killed
    and the answer scores 0."""
    verifier: str = DEFAULT_VERIFIER
    """Which grader (``pipeline.rl.grading.VERIFIERS``): "fast" and "math_verify" reproduce the authors'
    ``verifier_version`` settings (their 1.5B / Llama scripts use "fast", their 7B script and their standalone
    evaluation "math_verify"); "lenient" is this project's more lenient grader."""
    stages: tuple[str, ...] = tuple(EQUIVALENCE_STAGES)
    """The "lenient" verifier's equivalence checks after its normalised string match, in order
    (``pipeline.rl.grading.EQUIVALENCE_STAGES``); the other verifiers ignore it."""
    max_answer_chars: int = 1000
    """Extracted answers (or gold answers) longer than this score 0 without grading, unless identical to the gold."""
    worker_memory_mb: int = 4096
    """Address-space limit of each worker (RLIMIT_AS), so one answer cannot exhaust the node; 0 = no limit."""
    startup_timeout_s: float = 120.0
    """How long to wait for a worker process to start before failing loudly (an environment problem)."""

    def __post_init__(self):
        if self.num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {self.num_workers}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {self.timeout_s}")
        if self.max_answer_chars < 1:
            raise ValueError(f"max_answer_chars must be >= 1, got {self.max_answer_chars}")
        check_stages(self.stages)
        get_verifier(self.verifier)


STAT_KEYS = ("grading_failures", "grading_timeouts", "worker_restarts", "truncated", "no_answer",
             "answer_too_long", "string_match", "worker_graded")
"""Counts in ``grade_batch``'s stats (per response, except worker_restarts), plus ``grade_time_s``."""


def gold_answer(gold: str | int | float, verifier: str = "lenient") -> str | None:
    """The gold answer as ``verifier`` compares it: for "lenient" the content of its last ``\\boxed{}`` when it
    has one (MATH solutions), stripped; for the authors' verifiers their ``grade`` rule (None: unreadable box)."""
    return get_verifier(verifier).gold(str(gold))


# ------------------------------------------------------------------------------------------- worker process


def _serve(protocol_fd: int, memory_mb: str, parent_pid: str, stages: str, verifier: str) -> None:
    """Worker entry point: grade ``[job, pred, gold]`` lines from stdin, answer ``[job, equal, errors]`` lines on
    ``protocol_fd`` (the original stdout; fd 1 already points at stderr, so no library print can corrupt it)."""
    if not become_helper(int(parent_pid)):  # it dies with the rank even while stuck in C code (a hung grade)
        return
    if int(memory_mb) > 0:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(memory_mb) << 20, int(memory_mb) << 20))
    out, stages_ = os.fdopen(protocol_fd, "wb"), tuple(filter(None, stages.split(",")))
    equal_fn = get_verifier(verifier).equal
    # The first sympy simplify and math-verify parse build caches and ANTLR tables (~1 s on a busy node): done here,
    # before "ready", so that a worker's first real grade is not cut by the time limit.
    for pred, gold in (("\\frac{1}{2} + x", "\\frac{1}{3} + x"), ("[1, 2]", "\\{2, 1\\}")):  # unequal: every stage
        equal_fn(pred, gold, stages_)
    out.write(b'["ready"]\n')
    out.flush()
    for line in sys.stdin.buffer:
        job, pred, gold = json.loads(line)
        try:
            equal, errors = equal_fn(pred, gold, stages_)
        except BaseException as error:  # MemoryError, RecursionError...: report it and keep serving
            equal, errors = False, [f"{type(error).__name__}: {str(error)[:200]}"]
        out.write(json.dumps([job, equal, errors]).encode() + b"\n")
        out.flush()


_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_WORKER_CODE = ("import os, sys; fd = os.dup(1); os.dup2(2, 1); "
                "from pipeline.rl.reward import _serve; _serve(fd, *sys.argv[1:])")


class _Worker:
    """One grading process. ``fileno()`` lets ``multiprocessing.connection.wait`` watch its output."""

    def __init__(self, config: GraderConfig):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_ROOT, os.environ.get("PYTHONPATH")])))
        with exit_signals_blocked():
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(config.worker_memory_mb), str(os.getpid()),
                 ",".join(config.stages), config.verifier],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        self.startup_timeout_s = config.startup_timeout_s
        self.start_deadline = time.monotonic() + config.startup_timeout_s
        self.ready = False
        self.job: int | None = None
        self.deadline = 0.0
        self._buffer = b""

    def fileno(self) -> int:
        return self.process.stdout.fileno()

    def send(self, message: list) -> None:
        self.process.stdin.write(json.dumps(message).encode() + b"\n")  # small (answers are capped): never blocks
        self.process.stdin.flush()

    def has_message(self) -> bool:
        return b"\n" in self._buffer

    def receive(self) -> list | None:
        """The next message once a whole line has arrived ([] while partial); None when the process is gone."""
        if not self.has_message():
            chunk = os.read(self.fileno(), 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
            if not self.has_message():
                return []
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except ValueError:
            return []
        return message if isinstance(message, list) else []

    def check_started(self) -> None:
        if time.monotonic() > self.start_deadline:
            raise RuntimeError(f"a grading worker did not start within {self.startup_timeout_s} s; check that "
                               f"`{sys.executable} -c 'import pipeline.rl.reward'` works")

    def stop(self, kill: bool) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.process.stdin.close()  # EOF: the worker leaves its loop
            except OSError:
                pass
        try:
            self.process.wait(timeout=0.5 if kill else 2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            try:  # a killed worker that is slow to be reaped on a loaded node must not fail a finished run
                self.process.wait(timeout=10.0)
            except subprocess.TimeoutExpired:
                pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop(kill=False)
    workers.clear()


# ---------------------------------------------------------------------------------------------------- grader


class RewardGrader:
    """A pool of grading processes with a hard per-answer time limit. Use as a context manager, or call close().

    ``RewardGrader(num_workers=4, timeout_s=1.0)`` or ``RewardGrader(GraderConfig(...))``.
    """

    def __init__(self, config: GraderConfig | None = None, /, **overrides):
        try:
            self.config = dataclasses.replace(config or GraderConfig(), **overrides)
        except TypeError:
            valid = [f.name for f in dataclasses.fields(GraderConfig)]
            raise ValueError(f"unknown grader setting(s) {sorted(overrides)}; valid names: {valid}") from None
        self._workers: list[_Worker] = []  # the last one is the warm standby
        self._lock = threading.Lock()
        self._closed = False
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def start(self) -> "RewardGrader":
        """Start the workers and wait until they are ready (grade_batch does this on first use)."""
        with self._lock:
            self._ensure_workers()
            for worker in self._active():
                self._wait_ready(worker)
        return self

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._finalizer()

    def __enter__(self) -> "RewardGrader":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def worker_pids(self, *, include_standby: bool = False) -> list[int]:
        """Process ids of the active workers (and of the warm standby, last)."""
        return [w.process.pid for w in (self._workers if include_standby else self._active())]

    def _active(self) -> list[_Worker]:
        return self._workers[: self.config.num_workers]

    def _ensure_workers(self) -> int:
        """Drop dead workers and top the pool up (standby included); returns how many were replaced."""
        if self._closed:
            raise ValueError("this RewardGrader is closed; create a new one")
        dead = [w for w in self._workers if w.process.poll() is not None]
        for worker in dead:
            self._workers.remove(worker)
            worker.stop(kill=True)
        while len(self._workers) < self.config.num_workers + 1:
            self._workers.append(_Worker(self.config))
        return len(dead)

    def _replace(self, worker: _Worker) -> None:
        """Kill ``worker``; the standby takes its place and a new standby starts."""
        worker.stop(kill=True)
        self._workers.remove(worker)
        self._workers.append(_Worker(self.config))

    def _wait_ready(self, worker: _Worker) -> None:
        while not worker.ready:
            remaining = worker.start_deadline - time.monotonic()
            if worker.has_message() or (remaining > 0 and multiprocessing.connection.wait([worker], remaining)):
                message = worker.receive()
                if message is None:
                    raise RuntimeError(f"a grading worker exited at startup (code {worker.process.wait()}); check "
                                       f"that `{sys.executable} -c 'import pipeline.rl.reward'` works")
                worker.ready = message == ["ready"]
            worker.check_started()

    def grade_batch(self, responses: Sequence[str], golds: Sequence[str], template: str,
                    truncated: Sequence[bool] | None = None) -> tuple[list[float], dict[str, float]]:
        """Rewards (0.0 / 1.0, in order) and counts (``STAT_KEYS``, plus ``grade_time_s``).

        ``truncated[i]`` marks a response that hit the generation limit: it scores 0 whatever it says.
        """
        started = time.monotonic()
        get_template(template)  # an unknown template fails loudly, whatever the verifier
        verifier = get_verifier(self.config.verifier)
        truncated = [False] * len(responses) if truncated is None else list(truncated)
        if not len(responses) == len(golds) == len(truncated):
            raise ValueError(f"responses ({len(responses)}), golds ({len(golds)}) and truncated ({len(truncated)}) "
                             "must have the same length: one gold answer and one flag per response")
        missing = [i for i, gold in enumerate(golds) if gold is None or not str(gold).strip()]
        if missing:  # an empty box would equal it: a reward for nothing
            raise ValueError(f"gold answer missing (None or blank) for response(s) {missing[:5]}: every question "
                             "needs a gold answer (the question loaders refuse such records)")
        stats: dict[str, float] = dict.fromkeys(STAT_KEYS, 0)
        rewards = [0.0] * len(responses)
        jobs: dict[tuple[str, str], list[int]] = {}  # identical (answer, gold) pairs are graded once
        matched: dict[tuple[str, str], bool] = {}
        targets: dict[str, str | None] = {}
        for i, (response, gold) in enumerate(zip(responses, golds)):
            if truncated[i]:
                stats["truncated"] += 1
                continue
            try:
                pred = verifier.extract(response, template)
                gold = str(gold)
                if gold not in targets:
                    targets[gold] = verifier.gold(gold)
                target = targets[gold]
                if pred is None or not pred.strip():
                    stats["no_answer"] += 1
                    if pred is None or verifier.blank_scores_zero:
                        continue
                if target is None:  # a gold answer the verifier cannot read (an unclosed box): 0
                    continue
                if pred.strip() == target:
                    stats["string_match"] += 1
                    rewards[i] = 1.0
                elif max(len(pred), len(target)) > self.config.max_answer_chars:
                    stats["answer_too_long"] += 1
                else:
                    if (pred, target) not in matched:
                        matched[(pred, target)] = verifier.string_equal(pred, target)
                    if matched[(pred, target)]:
                        stats["string_match"] += 1
                        rewards[i] = 1.0
                    else:
                        jobs.setdefault((pred, target), []).append(i)
            except Exception:  # string scanning should not fail; if it does, the answer scores 0 and is counted
                stats["grading_failures"] += 1
        if jobs:
            with self._lock:
                stats["worker_restarts"] += self._ensure_workers()
                for (equal, status), indices in zip(self._run(list(jobs), stats), jobs.values()):
                    stats["worker_graded"] += len(indices)
                    if status != "ok":
                        stats[status] += len(indices)
                    for i in indices:
                        rewards[i] = 1.0 if equal else 0.0
        stats["grade_time_s"] = time.monotonic() - started
        return rewards, stats

    def _run(self, jobs: list[tuple[str, str]], stats: dict[str, float]) -> list[tuple[bool, str]]:
        """(equal, status) per job; status is "ok", "grading_timeouts" or "grading_failures"."""
        results: list[tuple[bool, str] | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))

        def fail(worker: _Worker, status: str) -> None:
            if worker.job is not None:
                results[worker.job] = (False, status)
            elif not worker.ready and (worker.process.poll() or 0) > 0:  # a Python error, not a kill signal
                raise RuntimeError(f"a grading worker exited at startup (code {worker.process.returncode}); check "
                                   f"that `{sys.executable} -c 'import pipeline.rl.reward'` works")
            self._replace(worker)
            stats["worker_restarts"] += 1

        while queue or any(w.job is not None for w in self._active()):
            for worker in self._active():
                if worker.ready and worker.job is None and queue:
                    job = queue.popleft()
                    try:
                        worker.send([job, *jobs[job]])
                    except OSError:  # died while idle: not this answer's fault, grade it elsewhere
                        queue.appendleft(job)
                        fail(worker, "grading_failures")
                        continue
                    worker.job, worker.deadline = job, time.monotonic() + self.config.timeout_s
            active = self._active()
            now = time.monotonic()
            wake = min([w.deadline for w in active if w.job is not None]
                       + [w.start_deadline for w in active if not w.ready], default=now)
            pending = [w for w in active if w.has_message()]
            for worker in pending or multiprocessing.connection.wait(active, timeout=max(0.0, wake - now)):
                message = worker.receive()
                if message is None:  # crashed or was killed
                    fail(worker, "grading_failures")
                elif message == ["ready"]:
                    worker.ready = True
                elif message and message[0] == worker.job:
                    _, equal, errors = message
                    results[worker.job] = (bool(equal), "ok" if equal or not errors else "grading_failures")
                    worker.job = None
            now = time.monotonic()
            for worker in self._active():
                if worker.job is not None and now >= worker.deadline:
                    fail(worker, "grading_timeouts")
                elif not worker.ready:
                    worker.check_started()
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]


_shared_graders: dict[str, RewardGrader] = {}
_shared_lock = threading.Lock()


def _shared(verifier: str) -> RewardGrader:
    get_verifier(verifier)  # an unknown name fails before any worker starts
    with _shared_lock:
        if verifier not in _shared_graders:
            _shared_graders[verifier] = RewardGrader(num_workers=1, verifier=verifier)
            atexit.register(_shared_graders[verifier].close)
        return _shared_graders[verifier]


def math_reward(response: str, gold: str, template: str, *, truncated: bool = False,
                verifier: str = DEFAULT_VERIFIER) -> float:
    """1.0 if the response's final answer (per ``template`` and ``verifier``) equals ``gold``, else 0.0; never raises
    on model text. ``truncated=True`` (a response cut at the length limit) scores 0, the authors' training rule.

    ``verifier``: "fast" (default, the authors' default ``verifier_version``), "math_verify" (the authors' other
    setting) or "lenient" (this project's grader); an unknown name raises ValueError listing them. Grades through
    one shared worker process per verifier (started by the first call that needs it, which takes about a second
    longer); each grade after that is bounded by ``GraderConfig.timeout_s``.
    """
    rewards, _ = _shared(verifier).grade_batch([response], [gold], template, [truncated])
    return rewards[0]
