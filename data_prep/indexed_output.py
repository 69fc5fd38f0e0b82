"""The output pair PREFIX.bin / PREFIX.idx and its PREFIX.summary.json, written so that no run leaves half of it.

Data goes to ``PREFIX.tmp-<pid>.bin/.idx``; only a finished pair is renamed over PREFIX.bin/.idx, with Ctrl-C and
SIGTERM held back during the renames, and the summary (which records the input fingerprint and both file sizes) is
written last. A pair is "up to date" only when its summary exists, matches the inputs and matches the files, so a
run killed even between the two renames is redone by the next run. Temporary files of dead runs are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Iterator


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Delay SIGINT / SIGTERM (main thread only) until the block is done."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class IndexedOutput:
    def __init__(self, prefix: str | os.PathLike):
        self.prefix = Path(prefix)
        if self.prefix.name in ("", ".", ".."):
            raise ValueError(f"output prefix {str(prefix)!r} names a directory; give a file prefix like out/corpus")
        if self.prefix.is_dir():
            raise ValueError(f"output prefix {self.prefix} is a directory; give a file prefix like {self.prefix}/corpus")
        self.bin = self.prefix.with_name(self.prefix.name + ".bin")
        self.idx = self.prefix.with_name(self.prefix.name + ".idx")
        self.summary = self.prefix.with_name(self.prefix.name + ".summary.json")
        self.temp_prefix = self.prefix.with_name(f"{self.prefix.name}.tmp-{os.getpid()}")

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None

    def up_to_date(self, fingerprint: str) -> dict | None:
        """The existing summary when the pair on disk was built from exactly these inputs, else None."""
        summary = self.read_summary()
        if not summary or summary.get("fingerprint") != fingerprint:
            return None
        files = summary.get("output", {})
        for path, key in ((self.bin, "bin_bytes"), (self.idx, "idx_bytes")):
            if not path.is_file() or path.stat().st_size != files.get(key):
                return None
        return summary

    def prepare(self) -> None:
        """Create the output directory and remove temporary files left by runs that died."""
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(re.escape(self.prefix.name) + r"\.tmp-(\d+)\.(bin|idx)$")
        for path in self.prefix.parent.iterdir():
            match = pattern.match(path.name)
            if match and not _pid_alive(int(match.group(1))):
                path.unlink(missing_ok=True)

    def discard_temp(self) -> None:
        for suffix in (".bin", ".idx"):
            Path(f"{self.temp_prefix}{suffix}").unlink(missing_ok=True)

    @contextlib.contextmanager
    def staging(self) -> Iterator[str]:
        """Yield the temporary prefix to write; on any error or interrupt, delete what was written."""
        try:
            yield str(self.temp_prefix)
        except BaseException:
            self.discard_temp()
            raise

    def commit(self, summary: dict) -> dict:
        """Move the finished temporary pair into place and write the summary (with the final file sizes) last."""
        temp_bin, temp_idx = Path(f"{self.temp_prefix}.bin"), Path(f"{self.temp_prefix}.idx")
        summary = dict(summary, output={"prefix": str(self.prefix), "bin": str(self.bin), "idx": str(self.idx),
                                        "bin_bytes": temp_bin.stat().st_size, "idx_bytes": temp_idx.stat().st_size})
        with _signals_held():
            self.summary.unlink(missing_ok=True)
            os.replace(temp_bin, self.bin)
            os.replace(temp_idx, self.idx)
            write_json_atomic(self.summary, summary)
        return summary
