"""Benchmark sets of the paper's suite (AIME24, AMC, MATH500, Minerva Math, OlympiadBench) and the synthetic
test set, read from local files into ``Question(question, answer, ...)`` lists.

A benchmark is named ``NAME=PATH`` (or ``NAME:PATH``), e.g. ``math500=/data/math500.jsonl`` or
``synthetic:outputs/data/rl_test.jsonl``. ``PATH`` is a jsonl (or a json list), a parquet file, or a
Hugging Face ``save_to_disk`` directory (a Dataset, or a DatasetDict such as the authors' evaluation suite,
whose splits ``aime``, ``amc``, ``math``, ``minerva``, ``olympiad_bench`` are picked by benchmark name).
``NAME`` picks the field names (``BENCHMARKS``); ``generic`` takes any of the usual ones.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.answers import last_boxed_content


class BenchmarkError(ValueError):
    """A benchmark file that is missing or cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    question_fields: tuple[str, ...]
    """Candidate fields holding the problem text; the first one present in the records is used."""
    answer_fields: tuple[str, ...]
    """Candidate fields holding the gold answer, first present wins. A ``solution`` field gives the content
    of its last ``\\boxed{}``; a list (OlympiadBench ``final_answer``) is joined with ', '."""
    splits: tuple[str, ...] = ()
    """DatasetDict split names that hold this benchmark (the authors' suite names first), then ``test``."""


_GENERIC_Q = ("problem", "question", "Problem", "Question")
_GENERIC_A = ("answer", "final_answer", "Answer", "solution", "Solution")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    "aime24": BenchmarkSpec(("problem", "Problem", "question"), ("answer", "Answer"), ("aime", "aime24", "train")),
    "amc": BenchmarkSpec(("problem", "question"), ("answer",), ("amc", "amc23", "train")),
    "math500": BenchmarkSpec(("problem", "question"), ("answer", "solution"), ("math", "math500", "test")),
    "minerva": BenchmarkSpec(("question", "problem"), ("answer", "solution"), ("minerva", "test")),
    "olympiadbench": BenchmarkSpec(("question", "problem"), ("final_answer", "answer"),
                                   ("olympiad_bench", "olympiadbench", "test", "train")),
    "synthetic": BenchmarkSpec(("question",), ("answer",), ("test",)),
    "generic": BenchmarkSpec(_GENERIC_Q, _GENERIC_A, ("test",)),
}

PAPER_SUITE = ("aime24", "amc", "math500", "minerva", "olympiadbench")
"""The paper's five benchmarks, in its table order."""


@dataclass(frozen=True)
class Question:
    question_id: int
    question: str
    answer: str
    extra: dict = field(default_factory=dict, compare=False)
    """Other scalar fields of the record (level, subject, ...), kept for per-field breakdowns."""


@dataclass(frozen=True)
class BenchmarkRef:
    name: str
    path: Path


_REF = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)[=:](.+)$")


def parse_benchmark(text: str) -> BenchmarkRef:
    """``NAME=PATH`` or ``NAME:PATH`` -> BenchmarkRef, checking the name (not the file)."""
    match = _REF.match(text.strip())
    if match is None:
        raise ValueError(f"benchmark {text!r} is not NAME=PATH (e.g. math500=/data/math500.jsonl or "
                         f"synthetic:outputs/rl_test.jsonl); names: {sorted(BENCHMARKS)}")
    name = match.group(1).lower()
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r} in {text!r}; valid names: {sorted(BENCHMARKS)} "
                         "(use generic=PATH for a set with problem/question and answer fields)")
    return BenchmarkRef(name, Path(match.group(2)))


def suite_refs(suite_dir: str | Path, names: tuple[str, ...] = PAPER_SUITE) -> list[BenchmarkRef]:
    """The authors' evaluation suite (one ``save_to_disk`` DatasetDict directory) as one ref per benchmark."""
    return [BenchmarkRef(name, Path(suite_dir)) for name in names]


def load_benchmark(ref: BenchmarkRef | str, *, max_questions: int = 0) -> list[Question]:
    """Read a benchmark into questions (all of them, or the first ``max_questions``)."""
    ref = parse_benchmark(ref) if isinstance(ref, str) else ref
    spec = BENCHMARKS[ref.name]
    path = ref.path
    if not path.exists():
        raise BenchmarkError(f"benchmark {ref.name}: {path} does not exist; give an existing jsonl, parquet file "
                             "or save_to_disk directory")
    if path.is_dir():
        records = _read_hf_dir(path, ref.name, spec)
    elif path.suffix == ".parquet":
        records = _read_parquet(path)
    elif path.suffix in (".jsonl", ".json"):
        records = _read_json(path)
    else:
        raise BenchmarkError(f"benchmark {ref.name}: cannot read {path}: expected .jsonl, .json, .parquet or a "
                             "save_to_disk directory")
    if not records:
        raise BenchmarkError(f"benchmark {ref.name}: {path} holds no records")
    if max_questions > 0:
        records = records[:max_questions]
    return _to_questions(records, ref.name, spec, path)


def _read_json(path: Path) -> list[dict]:
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise BenchmarkError(f"{path}: not valid JSON ({error})") from None
        lines = range(1, len(records) + 1)
    else:
        records, lines = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise BenchmarkError(f"{path}, line {lineno}: not valid JSON ({error.msg}); each line must be "
                                     "one JSON object") from None
            lines.append(lineno)
    for record, lineno in zip(records, lines):
        if not isinstance(record, dict):
            raise BenchmarkError(f"{path}, line {lineno}: expected a JSON object, got {type(record).__name__}")
        record["__line__"] = lineno
    return records


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise BenchmarkError(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from None


def _read_hf_dir(path: Path, name: str, spec: BenchmarkSpec) -> list[dict]:
    from datasets import Dataset, DatasetDict, load_from_disk

    if name == "synthetic" and (path / "rl_test.jsonl").exists():
        return _read_json(path / "rl_test.jsonl")
    try:
        data = load_from_disk(str(path))
    except Exception as error:
        raise BenchmarkError(f"benchmark {name}: {path} is not a save_to_disk directory ({error}); give a "
                             "jsonl/parquet file or a directory written by Dataset(Dict).save_to_disk") from None
    if isinstance(data, DatasetDict):
        split = next((s for s in spec.splits if s in data), None)
        if split is None and len(data) == 1:
            split = next(iter(data))
        if split is None:
            raise BenchmarkError(f"benchmark {name}: {path} has splits {sorted(data)} and none of {list(spec.splits)}; "
                                 "point at a single-split dataset or name the benchmark after its split")
        data = data[split]
    assert isinstance(data, Dataset)
    return data.to_list()


def _to_questions(records: list[dict], name: str, spec: BenchmarkSpec, path: Path) -> list[Question]:
    fields = set(records[0])
    q_field = next((f for f in spec.question_fields if f in fields), None)
    a_field = next((f for f in spec.answer_fields if f in fields), None)
    if q_field is None or a_field is None:
        shown = sorted(f for f in fields if f != "__line__")
        raise BenchmarkError(f"benchmark {name}: {path} has fields {shown}; expected a question field in "
                             f"{list(spec.question_fields)} and an answer field in {list(spec.answer_fields)} "
                             "(use generic=PATH, or rename the fields)")
    out = []
    for i, record in enumerate(records):
        where = f"{path}, line {record['__line__']}" if "__line__" in record else f"{path}, record {i}"
        question, raw = record.get(q_field), record.get(a_field)
        if not isinstance(question, str) or not question.strip():
            raise BenchmarkError(f"benchmark {name}: {where}: field {q_field!r} is missing or not a non-empty string")
        answer = _gold(raw, a_field)
        if answer is None:
            raise BenchmarkError(f"benchmark {name}: {where}: field {a_field!r} holds no usable gold answer "
                                 f"({str(raw)[:80]!r})")
        extra = {k: v for k, v in record.items() if k not in (q_field, a_field, "__line__")
                 and isinstance(v, (str, int, float, bool)) and not (isinstance(v, str) and len(v) > 200)}
        out.append(Question(i, question, answer, extra))
    return out


def _gold(raw, field_name: str) -> str | None:
    """The gold answer as a string: numbers without a spurious '.0', lists joined, solutions unboxed, $...$ dropped."""
    if raw is None or isinstance(raw, bool):
        return None
    if isinstance(raw, (list, tuple)):
        parts = [p for p in (_gold(item, field_name) for item in raw) if p]
        return ", ".join(parts) if parts else None
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return None
        return str(int(raw)) if raw.is_integer() else repr(raw)
    if isinstance(raw, int):
        return str(raw)
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    if field_name.lower() == "solution":
        text = (last_boxed_content(text) or "").strip()
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return text or None
