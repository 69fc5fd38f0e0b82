"""RL question sets -> ``Question(question, answer, source, level)`` with gold answers extracted the standard way.

    load_questions(QuestionSource("math", "/data/MATH", levels=(3, 4, 5), split="train"))
    load_questions_spec("math:/data/MATH?levels=3-5&split=train")     # the same, as one string (RL configs)
    load_questions_spec("outputs/data/rl_train.jsonl")                 # no kind: a generic {question, answer} jsonl

Kinds (``QUESTION_KINDS``): ``math`` (``problem`` + ``solution``; gold = the ``answer`` field when present, else the
last ``\\boxed{}`` of the solution; ``level`` "Level 3" or 3), ``gsm8k`` (``question`` + ``answer``; gold = the
``#### n`` line), ``jsonl`` (``question`` + ``answer`` [+ ``level``], e.g. data_prep synthetic's files).
Paths: a jsonl / json file, a parquet file, a ``datasets`` ``save_to_disk`` directory, or a directory of MATH's
per-problem ``.json`` files; a path that does not exist but looks like ``owner/name`` is loaded from the Hub.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator
from urllib.parse import parse_qs, urlencode

from data_prep.answers import gsm8k_gold_answer, last_boxed_content

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Question:
    question: str
    answer: str
    """Gold final answer (the grader compares the response's extracted answer to it)."""
    source: str
    """Where it came from: file and line / row, or dataset and index."""
    level: int | None = None
    """Difficulty level (MATH 1-5, synthetic 1-5); None when the set has none."""


@dataclass(frozen=True)
class QuestionSource:
    kind: str
    """Key of ``QUESTION_KINDS``: math, gsm8k or jsonl."""
    path: str
    """jsonl / json / parquet file, save_to_disk directory, directory of MATH .json files, or a Hub dataset name."""
    levels: tuple[int, ...] | None = None
    """Keep only these levels (the paper trains on MATH levels 3-5); None keeps every question."""
    split: str | None = None
    """Split of a save_to_disk DatasetDict or Hub dataset (default: train when there is one)."""

    def __post_init__(self):
        if self.kind not in QUESTION_KINDS:
            raise ValueError(f"unknown question set kind {self.kind!r}; valid kinds: {sorted(QUESTION_KINDS)}")
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(sorted({int(x) for x in self.levels})))

    @classmethod
    def parse(cls, spec: str) -> "QuestionSource":
        """``[KIND:]PATH[?levels=3-5&split=train]``; without a kind, PATH is a generic jsonl question set."""
        body, _, query = spec.partition("?")
        kind, sep, path = body.partition(":")
        if not sep or kind not in QUESTION_KINDS:
            kind, path = "jsonl", body
        options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        unknown = sorted(set(options) - {"levels", "split"})
        if unknown:
            raise ValueError(f"question spec {spec!r}: unknown option(s) {unknown}; valid: levels, split")
        levels = parse_levels(options["levels"]) if options.get("levels") else None
        return cls(kind, path, levels, options.get("split") or None)

    def __str__(self) -> str:
        options = {}
        if self.levels:
            options["levels"] = ",".join(map(str, self.levels))
        if self.split:
            options["split"] = self.split
        return f"{self.kind}:{self.path}" + (f"?{urlencode(options, safe=',')}" if options else "")


def parse_levels(text: str) -> tuple[int, ...]:
    """'3-5' -> (3, 4, 5); '1,3' -> (1, 3); '3-5,7' -> (3, 4, 5, 7)."""
    levels: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ValueError(f"bad level list {text!r}; write levels like 3-5 or 1,3,5")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        levels += range(low, high + 1)
    return tuple(sorted(set(levels)))


# ---- reading raw records ------------------------------------------------------------------------------------------


def _read_json_file(path: Path) -> Iterator[tuple[str, dict]]:
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and path.suffix == ".json" and "\n{" not in stripped):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: malformed JSON ({e.msg}); fix the file") from None
        rows = data if isinstance(data, list) else [data]
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", row
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); fix the line") from None


def _looks_like_hub_name(name: str) -> bool:
    """owner/name, and not a mistyped local path: no file extension, no existing local directory as its owner."""
    path = Path(name)
    return (re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and path.suffix not in QUESTION_FILE_SUFFIXES
            and not path.parent.is_dir())


QUESTION_FILE_SUFFIXES = (".json", ".jsonl", ".parquet", ".gz")


def _read_records(path_or_name: str, split: str | None) -> Iterator[tuple[str, dict]]:
    path = Path(path_or_name)
    if path.is_file() and path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist()):
            yield f"{path}:row {i}", row
    elif path.is_file():
        yield from _read_json_file(path)
    elif path.is_dir() and any((path / m).exists() for m in ("dataset_info.json", "dataset_dict.json", "state.json")):
        import datasets

        loaded = datasets.load_from_disk(str(path))
        yield from _dataset_rows(loaded, split, str(path))
    elif path.is_dir():
        files = sorted(path.rglob("*.json")) + sorted(path.rglob("*.jsonl"))
        if not files:
            raise ValueError(f"{path} holds no .json / .jsonl question files and is not a save_to_disk directory")
        for file in files:
            yield from _read_json_file(file)
    elif _looks_like_hub_name(path_or_name):
        import datasets

        yield from _dataset_rows(datasets.load_dataset(path_or_name), split, path_or_name)
    else:
        raise FileNotFoundError(f"question set {path_or_name!r} does not exist (a jsonl / json / parquet file, a "
                                "save_to_disk directory, a directory of MATH .json files, or a Hub dataset name)")


def _dataset_rows(loaded, split: str | None, label: str) -> Iterator[tuple[str, dict]]:
    if hasattr(loaded, "keys"):  # a DatasetDict
        chosen = split or ("train" if "train" in loaded else None)
        if chosen not in loaded:
            raise ValueError(f"{label} holds splits {sorted(loaded)}; choose one with split=NAME")
        loaded, label = loaded[chosen], f"{label}[{chosen}]"
    for i, row in enumerate(loaded):
        yield f"{label} #{i}", row


# ---- kinds: record -> (question, gold answer, level) --------------------------------------------------------------


def _field(record: dict, name: str, where: str, kind: str) -> str:
    value = record.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {kind} record needs a non-empty string field {name!r} (fields: {sorted(record)}); "
                         f"{_KIND_HINT}")
    return value


_KIND_HINT = ("kinds: math needs problem + solution (or answer), gsm8k needs question + answer with '#### n', jsonl "
              "needs question + answer")


def _level(value) -> int | None:
    """3, "3", "Level 3" -> 3; "Level ?" / None -> None."""
    if isinstance(value, int):
        return value
    match = re.search(r"(\d+)", str(value)) if value is not None else None
    return int(match.group(1)) if match else None


def _math(record: dict, where: str) -> tuple[str, str | None, int | None]:
    problem = _field(record, "problem", where, "math")
    answer = record.get("answer")
    if answer is None or not str(answer).strip():
        answer = last_boxed_content(_field(record, "solution", where, "math"))
    return problem, None if answer is None else str(answer).strip(), _level(record.get("level"))


def _gsm8k(record: dict, where: str) -> tuple[str, str | None, int | None]:
    return _field(record, "question", where, "gsm8k"), gsm8k_gold_answer(_field(record, "answer", where, "gsm8k")), None


def _generic(record: dict, where: str) -> tuple[str, str | None, int | None]:
    question = _field(record, "question", where, "jsonl")
    answer = record.get("answer")
    if answer is None or isinstance(answer, (dict, list)) or not str(answer).strip():
        raise ValueError(f"{where}: jsonl record needs an 'answer' (fields: {sorted(record)}); {_KIND_HINT}")
    return question, str(answer).strip(), _level(record.get("level"))


QUESTION_KINDS: dict[str, Callable[[dict, str], tuple[str, str | None, int | None]]] = {
    "math": _math,
    "gsm8k": _gsm8k,
    "jsonl": _generic,
}


def load_questions(source: QuestionSource | str) -> list[Question]:
    """All questions of ``source`` with gold answers, filtered to ``source.levels``; raises when none are left."""
    if isinstance(source, str):
        source = QuestionSource.parse(source)
    extract = QUESTION_KINDS[source.kind]
    questions: list[Question] = []
    dropped: Counter = Counter()
    for where, record in _read_records(source.path, source.split):
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
        question, answer, level = extract(record, where)
        if answer is None:
            dropped["no gold answer"] += 1
        elif source.levels is not None and level not in source.levels:
            dropped["level filtered"] += 1
        else:
            questions.append(Question(question, answer, where, level))
    if dropped:
        logger.info("%s: kept %d questions, dropped %s", source, len(questions), dict(dropped))
    if not questions:
        raise ValueError(f"{source}: no questions left (dropped: {dict(dropped)}); check the kind, path and levels")
    return questions


def load_questions_spec(spec: str, levels: Iterable[int] | None = None, split: str | None = None) -> list[Question]:
    """``load_questions`` of a spec string; ``levels`` / ``split`` (when given) override the spec's own."""
    source = QuestionSource.parse(spec)
    if levels is not None or split is not None:
        source = QuestionSource(source.kind, source.path, tuple(levels) if levels is not None else source.levels,
                                split if split is not None else source.split)
    return load_questions(source)
