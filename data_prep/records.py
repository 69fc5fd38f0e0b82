"""Where records come from: local jsonl / parquet / txt files, Hugging Face datasets (Hub or ``save_to_disk``).

A ``RecordSource`` yields ``SourceItem(where, record, nbytes)``: ``where`` names the file and line (or row) so every
error can point at it, ``record`` is a dict or a ``BadRecord`` (a line that is not valid UTF-8 or not JSON), and
``nbytes`` is how far the source advanced (for the progress bar). The caller decides whether a bad record stops the
run or is skipped and counted.

Nothing here touches the network unless the source is a Hub dataset the user named.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

FILE_FORMATS = ("jsonl", "parquet", "txt", "txt_lines", "hf_disk")
"""Local formats: jsonl (one JSON object per line, .gz allowed), parquet, txt (one document per file),
txt_lines (one document per line), hf_disk (a ``datasets`` ``save_to_disk`` directory)."""

_EXTENSION_FORMATS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "txt", ".md": "txt", ".tex": "txt",
}


class BadRecord(Exception):
    """One record that cannot be used: ``reason`` is its skip-count key, ``where`` its file:line."""

    def __init__(self, reason: str, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.reason, self.where, self.detail = reason, where, detail


@dataclass(frozen=True)
class SourceItem:
    where: str
    """File and line (or row / record number) of this record, for messages."""
    record: dict | BadRecord
    nbytes: int = 0
    """Input bytes consumed since the previous item (0 where unknown)."""


def detect_format(path: Path) -> str:
    """The local format of ``path`` from its extension (``.gz`` stripped) or, for a directory, its contents."""
    if path.is_dir():
        if any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json", "state.json")):
            return "hf_disk"
        raise ValueError(f"{path} is a directory but not a datasets save_to_disk directory (no dataset_info.json); "
                         f"pass the files inside it, e.g. --data-files '{path}/*.jsonl'")
    suffixes = [s for s in path.suffixes if s != ".gz"]
    fmt = _EXTENSION_FORMATS.get(suffixes[-1].lower() if suffixes else "")
    if fmt is None:
        raise ValueError(f"cannot tell the format of {path} from its extension; name it with --format "
                         f"({', '.join(FILE_FORMATS)})")
    return fmt


def resolve_data_files(patterns: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand globs (``**`` allowed) into a sorted, de-duplicated file list; a pattern matching nothing is an error."""
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            what = "file" if not glob.has_magic(pattern) else "pattern"
            raise FileNotFoundError(f"data {what} {pattern!r} matches no files (working directory {os.getcwd()}); "
                                    "check the path or quote the glob")
        files += [Path(m) for m in matches]
    seen, unique = set(), []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def _decode_utf8(raw: bytes, where: str) -> str | BadRecord:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return BadRecord("invalid_utf8", where, f"invalid UTF-8 at byte {e.start} ({e.reason}); re-encode the file "
                         "as UTF-8 (e.g. iconv -f latin1 -t utf-8), or pass --on-bad-record skip to skip and count it")


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_jsonl(path: Path) -> Iterator[SourceItem]:
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                yield SourceItem(where, BadRecord("blank_line", where, "blank line"), len(raw))
                continue
            text = _decode_utf8(raw, where)
            if isinstance(text, BadRecord):
                yield SourceItem(where, text, len(raw))
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                record = BadRecord("malformed_json", where, f"malformed JSON ({e.msg} at column {e.colno}); fix the "
                                   "line, or pass --on-bad-record skip to skip and count such lines")
            if not isinstance(record, (dict, BadRecord)):
                record = BadRecord("not_an_object", where, f"expected a JSON object per line, got "
                                   f"{type(record).__name__}; write one {{\"text\": ...}} object per line")
            yield SourceItem(where, record, len(raw))


def iter_txt_file(path: Path) -> Iterator[SourceItem]:
    with _open_binary(path) as f:
        raw = f.read()
    text = _decode_utf8(raw, str(path))
    yield SourceItem(str(path), text if isinstance(text, BadRecord) else {"text": text}, len(raw))


def iter_txt_lines(path: Path) -> Iterator[SourceItem]:
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            text = _decode_utf8(raw, where)
            yield SourceItem(where, text if isinstance(text, BadRecord) else {"text": text.rstrip("\r\n")}, len(raw))


def iter_parquet(path: Path, columns: list[str] | None) -> Iterator[SourceItem]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not parquet
        raise ValueError(f"{path}: not a readable parquet file ({e})") from None
    if columns is not None:
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r}; its columns are {pf.schema_arrow.names}. Name the "
                             "text column with --text-field, or use a corpus whose text function reads these")
    size, rows = path.stat().st_size, max(1, pf.metadata.num_rows)
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns):
        for record in batch.to_pylist():
            yield SourceItem(f"{path}:row {row}", record, size // rows)
            row += 1


def iter_hf_dataset(dataset, label: str) -> Iterator[SourceItem]:
    for i, record in enumerate(dataset):
        yield SourceItem(f"{label} record {i}", record, 0)


def load_hf_disk(path: Path, split: str):
    """A ``save_to_disk`` directory as one split (a DatasetDict must contain ``split``)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path} holds splits {sorted(loaded)}, not {split!r}; choose one with --split")
        loaded = loaded[split]
    return loaded


class RecordSource:
    """All records of a corpus, in a fixed order: local files (sorted per glob) or one Hugging Face dataset."""

    def __init__(self, *, files: list[Path] | None = None, file_format: str = "auto", columns: list[str] | None = None,
                 hf_path: str | None = None, hf_config: str | None = None, hf_split: str = "train",
                 streaming: bool = True):
        if file_format != "auto" and file_format not in FILE_FORMATS:
            raise ValueError(f"unknown file format {file_format!r}; valid formats: auto, {', '.join(FILE_FORMATS)}")
        if not files and not hf_path:
            raise ValueError("this corpus has no data files and no Hugging Face dataset; pass --data-files GLOB")
        self.files = list(files or [])
        self.formats = [detect_format(f) if file_format == "auto" else file_format for f in self.files]
        self.columns = columns
        self.hf_path, self.hf_config, self.hf_split, self.streaming = hf_path, hf_config, hf_split, streaming

    @property
    def total_bytes(self) -> int | None:
        """Input size for the progress bar (None for Hub datasets and datasets directories)."""
        if not self.files or "hf_disk" in self.formats:
            return None
        return sum(f.stat().st_size for f in self.files)

    def describe(self) -> list[dict]:
        """What the source reads, with sizes and modification times: the input part of the re-run fingerprint."""
        if not self.files:
            return [{"hf_path": self.hf_path, "config": self.hf_config, "split": self.hf_split}]
        out = []
        for f, fmt in zip(self.files, self.formats):
            paths = sorted(p for p in f.rglob("*") if p.is_file()) if f.is_dir() else [f]
            stats = [p.stat() for p in paths]
            out.append({"path": str(f.resolve()), "format": fmt, "bytes": sum(s.st_size for s in stats),
                        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0)})
        return out

    def __iter__(self) -> Iterator[SourceItem]:
        if not self.files:
            import datasets

            try:
                ds = datasets.load_dataset(self.hf_path, name=self.hf_config, split=self.hf_split,
                                           streaming=self.streaming)
            except Exception as e:  # network, auth, unknown config: datasets raises many types
                raise ValueError(f"could not load Hub dataset {self.hf_path!r} (config {self.hf_config!r}, split "
                                 f"{self.hf_split!r}): {e}. Without internet, download its files and pass them with "
                                 "--data-files") from None
            yield from iter_hf_dataset(ds, f"{self.hf_path}[{self.hf_config or 'default'}/{self.hf_split}]")
            return
        for path, fmt in zip(self.files, self.formats):
            yield from _READERS[fmt](path, self)


_READERS = {
    "jsonl": lambda path, source: iter_jsonl(path),
    "parquet": lambda path, source: iter_parquet(path, source.columns),
    "txt": lambda path, source: iter_txt_file(path),
    "txt_lines": lambda path, source: iter_txt_lines(path),
    "hf_disk": lambda path, source: iter_hf_dataset(load_hf_disk(path, source.hf_split), str(path)),
}
assert set(_READERS) == set(FILE_FORMATS)
