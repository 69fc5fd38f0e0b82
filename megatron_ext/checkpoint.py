"""Checkpoints on disk: Megatron distributed checkpoints (reshardable across TP/PP) plus what a reader needs.

Layout of one checkpoint (`root/iter_0000100/`):
    model/          megatron.core.dist_checkpointing files (model, and optimizer when the trainer adds it)
    hf_config/      config.json (+ tokenizer files) of the Hugging Face model it came from
    trainer_state.json  rank-independent trainer state (iteration, data position, ...), written by rank 0
    manifest.json   every file's size, and a sha256 of the files up to CHECKSUM_MAX_BYTES, checked before a load
    COMPLETE        written last; a directory without it is never loaded
`root/latest_checkpointed_iteration.txt` names the newest complete one. Writes go to `iter_*.tmp` first and are
renamed when complete, so an `iter_*` directory that fails its checks was damaged afterwards: it is refused with the
reason and the previous good checkpoint to resume from instead, never skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import torch.distributed as dist

from megatron_ext.helper_processes import EXIT_SIGNALS, become_helper, exit_signals_blocked

COMPLETE_MARKER = "COMPLETE"
RUN_DONE_FILE = "DONE"
"""Written in a run's output directory (its last step) once it finished: a rerun has nothing to do."""
MANIFEST = "manifest.json"
CHECKSUM_MAX_BYTES = 64 << 20
"""Files up to this size get a sha256 in the manifest (metadata, small shards); larger ones are checked by size."""
LATEST_FILE = "latest_checkpointed_iteration.txt"
_writer_helper_pid: int | None = None


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def checkpoint_dir(root: str | os.PathLike, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def save_checkpoint(
    root: str | os.PathLike,
    iteration: int,
    sharded_state_dict: dict,
    *,
    hf_config,
    tokenizer_dir: str | os.PathLike | None = None,
    trainer_state: dict | None = None,
    keep_last: int | None = None,
) -> Path:
    """Collective: every rank calls with its sharded state dict. Returns the final directory."""
    from megatron.core import dist_checkpointing

    final = checkpoint_dir(root, iteration)
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "model").mkdir(parents=True)
        hf_config.save_pretrained(tmp / "hf_config")
        if tokenizer_dir is not None:
            copy_tokenizer_files(tokenizer_dir, tmp / "hf_config")
        (tmp / "trainer_state.json").write_text(json.dumps(dict(trainer_state or {}, iteration=iteration), indent=2))
    _barrier()
    start_writer_helper()
    dist_checkpointing.save(sharded_state_dict, str(tmp / "model"))
    _barrier()
    if _rank() == 0:
        (tmp / MANIFEST).write_text(json.dumps({"iteration": iteration, "files": _file_records(tmp)}, indent=1))
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        latest_tmp = Path(root) / (LATEST_FILE + ".tmp")
        latest_tmp.write_text(str(iteration))
        latest_tmp.replace(Path(root) / LATEST_FILE)
        if keep_last:
            for old in sorted(Path(root).glob("iter_???????"))[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def start_writer_helper() -> int | None:
    """Start the process Megatron's checkpoint writer keeps for the rest of the run (a multiprocessing Manager
    serving its results queue) unless it runs already; returns its pid, None if this Megatron needs none.

    Megatron would start a plain one at the first save, which a TERM to the job step kills, and the rank's own
    save on that TERM then fails (BrokenPipeError). This one is a `helper_processes` helper: it ignores the job step's
    exit signals and dies with the thread that started it, so it is never orphaned: call it from the main thread.
    """
    global _writer_helper_pid
    import multiprocessing
    from multiprocessing import resource_tracker
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if not hasattr(filesystem_async, "_results_queue") or filesystem_async._results_queue is not None:
        return _writer_helper_pid
    manager = SyncManager(ctx=multiprocessing.get_context("spawn"))
    # Blocked from fork through exec to the initializer (a child inherits the mask), so a signal that arrives
    # meanwhile cannot kill the helper; this process still gets it (in another thread, or once unblocked).
    with exit_signals_blocked():
        resource_tracker.ensure_running()  # the spawn's other helper; starting it unblocks SIGTERM again
        signal.pthread_sigmask(signal.SIG_BLOCK, EXIT_SIGNALS)
        manager.start(_init_writer_helper, (os.getpid(),))
    filesystem_async._results_queue = manager.Queue()  # the queue's proxy keeps the manager alive
    _writer_helper_pid = manager._process.pid
    return _writer_helper_pid


def _init_writer_helper(parent_pid: int) -> None:
    if not become_helper(parent_pid):
        os._exit(0)


def _file_records(directory: Path) -> dict[str, list]:
    """relative path -> [size, sha256 or None (files over CHECKSUM_MAX_BYTES)] for every file under `directory`."""
    import hashlib

    records = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if size <= CHECKSUM_MAX_BYTES else None
        records[str(path.relative_to(directory))] = [size, digest]
    return records


def _verify_manifest(path: Path) -> None:
    import hashlib

    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {path} is damaged: {MANIFEST} does not parse ({e})") from None
    for name, (size, digest) in files.items():
        file = path / name
        if not file.is_file():
            raise ValueError(f"checkpoint {path} is damaged: {name} is missing")
        if file.stat().st_size != size:
            raise ValueError(f"checkpoint {path} is damaged: {name} has {file.stat().st_size} bytes, {size} were "
                             "written")
        if digest is not None and hashlib.sha256(file.read_bytes()).hexdigest() != digest:
            raise ValueError(f"checkpoint {path} is damaged: {name} differs from what was written (sha256)")


def validate_checkpoint_dir(path: str | os.PathLike) -> Path:
    """Raise ValueError unless `path` is a complete, undamaged checkpoint written by save_checkpoint."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"checkpoint {path} does not exist or is not a directory")
    if path.name.endswith(".tmp") or not (path / COMPLETE_MARKER).exists():
        raise ValueError(
            f"checkpoint {path} is incomplete (no {COMPLETE_MARKER} marker: the job stopped while writing it); "
            "point at an earlier iter_* directory or delete this one"
        )
    for needed in ("model/metadata.json", "hf_config/config.json", "trainer_state.json"):
        if not (path / needed).exists():
            raise ValueError(f"checkpoint {path} is damaged: {needed} is missing")
    if (path / MANIFEST).exists():  # checkpoints written before manifests have none
        _verify_manifest(path)
    try:
        json.loads((path / "trainer_state.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {path} is damaged: trainer_state.json does not parse ({e})") from None
    return path


def find_latest_checkpoint(root: str | os.PathLike, resume_option: str = "resume_from") -> Path | None:
    """The newest checkpoint under `root` (None when there is none; an unfinished `iter_*.tmp` write is not one).
    A damaged newest checkpoint raises ValueError naming the damage and the previous good one, which the user can
    resume from with `resume_option`: a run never silently starts over or falls back."""
    root = Path(root)
    candidates = sorted(root.glob("iter_???????"), reverse=True) if root.is_dir() else []
    if not candidates:
        return None
    try:
        return validate_checkpoint_dir(candidates[0])
    except ValueError as damage:
        previous = None
        for candidate in candidates[1:]:
            try:
                previous = validate_checkpoint_dir(candidate)
                break
            except ValueError:
                continue
        fix = (f"use the previous good one with {resume_option}={previous} (or delete {candidates[0]})"
               if previous is not None else f"there is no earlier good one: delete {candidates[0]} to start over")
        raise ValueError(f"{damage}. Not resuming from it: {fix}") from None


def load_checkpoint(path: str | os.PathLike, sharded_state_dict: dict) -> tuple[dict, dict]:
    """Collective. Returns (loaded state dict, trainer_state). Refuses incomplete checkpoints."""
    import torch
    from megatron.core import dist_checkpointing

    path = validate_checkpoint_dir(path)
    with torch.no_grad():
        state = dist_checkpointing.load(sharded_state_dict, str(path / "model"))
    return state, json.loads((path / "trainer_state.json").read_text())


def load_hf_config(path: str | os.PathLike):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(Path(path) / "hf_config")


def copy_tokenizer_files(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    names = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
             "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
    Path(dst).mkdir(parents=True, exist_ok=True)
    for name in names:
        f = Path(src) / name
        if f.is_file():
            shutil.copy2(f, Path(dst) / name)
