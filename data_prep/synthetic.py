"""The tiny default's data, generated on the fly from a seed: pretraining corpus, tokenizer, RL question sets.

    python -m data_prep synthetic --out outputs/data --seed 0
    make_synthetic_dataset("outputs/data", seed=0)   # -> SyntheticDataset with the paths below

Writes into OUT:
- ``pretrain.jsonl``: ``{"text": question + "\\n" + worked solution ending in "The answer is \\boxed{N}."}``, all five
  levels in equal shares (``data_prep.synthetic_problems``); tokenize it with ``python -m data_prep tokenize``.
- ``tokenizer/``: byte-level BPE trained on that corpus (``data_prep.tiny_tokenizer``).
- ``rl_train.jsonl`` / ``rl_test.jsonl``: ``{"question", "answer", "level"}``, levels in equal shares. No question
  text appears twice within or across the two sets, and no test question appears in the pretraining corpus.
- ``synthetic.json``: the config and file hashes, written last. A second call with the same config finds it and
  does nothing; files are generated in a temporary directory and moved into place under a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_prep.synthetic_problems import GENERATORS, LEVELS, Problem

GENERATOR_VERSION = 2
"""Bump whenever the same config would generate different files, so existing directories are regenerated."""
MANIFEST = "synthetic.json"


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    """Seeds every draw; the same config gives byte-identical files."""
    num_pretrain_docs: int = 20000
    """Pretraining documents (about 40 tokens each with the tiny tokenizer, 0.8M tokens at the default)."""
    num_train_questions: int = 2000
    """RL training questions, in equal shares per level."""
    num_test_questions: int = 250
    """Held-out RL questions, in equal shares per level."""
    vocab_size: int = 1024
    """Target vocabulary of the tiny BPE tokenizer (3 special tokens included)."""
    forum_boxed_rate: float = 0.3
    """Share of forum-style pretraining solutions that box their answer; the others end "The answer is N.", which
    scores 0. Textbook-style solutions always box. A base model therefore often answers forum questions unboxed:
    a format gap that RL closes (set 1.0 to remove it)."""

    def __post_init__(self):
        for name in ("num_pretrain_docs", "num_train_questions", "num_test_questions"):
            if getattr(self, name) < len(LEVELS):
                raise ValueError(f"{name} must be >= {len(LEVELS)} (one per level), got {getattr(self, name)}")
        if not 0.0 <= self.forum_boxed_rate <= 1.0:
            raise ValueError(f"forum_boxed_rate must be in [0, 1], got {self.forum_boxed_rate}")


@dataclass(frozen=True)
class SyntheticDataset:
    root: Path
    pretrain: Path
    """pretrain.jsonl, field ``text``."""
    tokenizer: Path
    """Hugging Face tokenizer directory."""
    rl_train: Path
    rl_test: Path
    manifest: Path

    @classmethod
    def at(cls, root: str | os.PathLike) -> "SyntheticDataset":
        root = Path(root)
        return cls(root, root / "pretrain.jsonl", root / "tokenizer", root / "rl_train.jsonl", root / "rl_test.jsonl",
                   root / MANIFEST)


def _per_level(total: int) -> dict[int, int]:
    base, extra = divmod(total, len(LEVELS))
    return {level: base + (i < extra) for i, level in enumerate(LEVELS)}


def _draw_unique(rng: random.Random, level: int, count: int, taken: set[str], what: str) -> list[Problem]:
    """``count`` problems of ``level`` whose question texts are new (not in ``taken``, which is updated)."""
    out: list[Problem] = []
    attempts = 0
    while len(out) < count:
        attempts += 1
        if attempts > 10 * count + 1000:
            raise ValueError(f"level {level} ran out of distinct questions after {len(out)} {what} questions; "
                             f"ask for fewer {what} questions")
        problem = GENERATORS[level](rng)
        if problem.question not in taken:
            taken.add(problem.question)
            out.append(problem)
    return out


def generate(config: SyntheticConfig) -> tuple[list[str], list[Problem], list[Problem]]:
    """(pretraining documents, train problems, test problems), deterministic in ``config``."""
    test_rng, train_rng, pretrain_rng = (random.Random(f"{config.seed}:{part}") for part in ("test", "train", "pretrain"))
    taken: set[str] = set()
    test = [p for level, n in _per_level(config.num_test_questions).items()
            for p in _draw_unique(test_rng, level, n, taken, "test")]
    test_questions = set(taken)
    train = [p for level, n in _per_level(config.num_train_questions).items()
             for p in _draw_unique(train_rng, level, n, taken, "train")]
    test_rng.shuffle(test)
    train_rng.shuffle(train)

    documents = []
    for level, n in _per_level(config.num_pretrain_docs).items():
        made = 0
        while made < n:
            problem = GENERATORS[level](pretrain_rng)
            if problem.question in test_questions:
                continue
            boxed = problem.style == "textbook" or pretrain_rng.random() < config.forum_boxed_rate
            documents.append(problem.document(boxed))
            made += 1
    pretrain_rng.shuffle(documents)
    return documents, train, test


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _question_row(problem: Problem) -> dict:
    return {"question": problem.question, "answer": str(problem.answer), "level": problem.level}


def _file_hashes(root: Path) -> dict[str, str]:
    paths = [root / "pretrain.jsonl", root / "rl_train.jsonl", root / "rl_test.jsonl",
             *sorted((root / "tokenizer").glob("*"))]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def _is_complete(paths: SyntheticDataset, config: SyntheticConfig) -> bool:
    try:
        manifest = json.loads(paths.manifest.read_text())
        current = _file_hashes(paths.root)
    except (OSError, ValueError):
        return False
    return (manifest.get("version") == GENERATOR_VERSION and manifest.get("config") == dataclasses.asdict(config)
            and manifest.get("files") == current)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    with open(root / ".synthetic.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def make_synthetic_dataset(out_dir: str | os.PathLike, *, force: bool = False, **config) -> SyntheticDataset:
    """Generate the tiny default's data into ``out_dir`` (``config``: fields of ``SyntheticConfig``)."""
    from data_prep.tiny_tokenizer import train_tiny_tokenizer

    config = SyntheticConfig(**config)
    paths = SyntheticDataset.at(out_dir)
    paths.root.mkdir(parents=True, exist_ok=True)
    with _locked(paths.root):
        if not force and _is_complete(paths, config):
            return paths
        staging = paths.root / f".synthetic-tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            documents, train, test = generate(config)
            _write_jsonl(staging / "pretrain.jsonl", [{"text": d} for d in documents])
            _write_jsonl(staging / "rl_train.jsonl", [_question_row(p) for p in train])
            _write_jsonl(staging / "rl_test.jsonl", [_question_row(p) for p in test])
            train_tiny_tokenizer(documents, staging / "tokenizer", vocab_size=config.vocab_size)
            paths.manifest.unlink(missing_ok=True)
            for name in ("pretrain.jsonl", "rl_train.jsonl", "rl_test.jsonl"):
                os.replace(staging / name, paths.root / name)
            shutil.rmtree(paths.tokenizer, ignore_errors=True)
            os.replace(staging / "tokenizer", paths.tokenizer)
            manifest = {"version": GENERATOR_VERSION, "config": dataclasses.asdict(config),
                        "counts": {"pretrain_docs": len(documents), "train_questions": len(train),
                                   "test_questions": len(test)},
                        "files": _file_hashes(paths.root)}
            tmp_manifest = staging / MANIFEST
            tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(tmp_manifest, paths.manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return paths
