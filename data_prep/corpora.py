"""The corpus registry: each named pretraining corpus, where its text comes from, and how to get one record's text.

    from data_prep.corpora import get_corpus
    spec = get_corpus("finemath-4plus")              # a registry entry
    spec = get_corpus("my_pkg.corpora:my_corpus")     # a CorpusSpec, or a record -> text function, of your own

Add a corpus by adding one entry to ``CORPORA``. A corpus on the Hugging Face Hub is streamed with ``datasets``
unless ``--data-files`` points at local copies (jsonl / parquet / a ``save_to_disk`` directory), in which case the
Hub is never touched: that is how clusters without internet use the Hub entries.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable

from data_prep.records import BadRecord


@dataclass(frozen=True)
class FieldText:
    """Text of one record: its ``field``, which must hold a string."""

    field: str = "text"

    def __call__(self, record: dict) -> str | None:
        if self.field not in record:
            raise KeyError(self.field)
        return record[self.field]

    @property
    def columns(self) -> list[str]:
        return [self.field]


@dataclass(frozen=True)
class JoinedFields:
    """Text of one record: several string fields joined by ``separator`` (e.g. a question and its solution)."""

    fields: tuple[str, ...]
    separator: str = "\n\n"

    def __call__(self, record: dict) -> str | None:
        for name in self.fields:
            if name not in record:
                raise KeyError(name)
        parts = [record[name] for name in self.fields]
        if not all(isinstance(p, str) for p in parts):
            bad = next(n for n, p in zip(self.fields, parts) if not isinstance(p, str))
            raise TypeError(f"field {bad!r} is {type(record[bad]).__name__}, not a string")
        return self.separator.join(p.strip() for p in parts)

    @property
    def columns(self) -> list[str]:
        return list(self.fields)


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    """Registry name (or the dotted path it was loaded from)."""
    description: str = ""
    """One line for `python -m data_prep corpora`."""
    text: Callable[[dict], str | None] = FieldText("text")
    """Record -> document text. ``FieldText(field)``, ``JoinedFields(fields, sep)`` or any importable function;
    None or an empty string skips the record (counted as empty)."""
    hf_path: str | None = None
    """Hugging Face dataset name, loaded with ``datasets.load_dataset`` when no local data files are given."""
    hf_config: str | None = None
    """Dataset configuration (subset) name on the Hub."""
    hf_split: str = "train"
    """Split read from the Hub dataset, or from a ``save_to_disk`` DatasetDict."""
    streaming: bool = True
    """Stream the Hub dataset record by record instead of downloading all of it first."""
    data_files: tuple[str, ...] = ()
    """Default local globs; ``--data-files`` replaces them."""
    file_format: str = "auto"
    """How local files are read: auto (by extension), jsonl, parquet, txt (a document per file), txt_lines
    (a document per line), hf_disk (see ``data_prep.records.FILE_FORMATS``)."""

    def get_text(self, record: dict, where: str) -> str | None:
        """The document text of ``record``, or a ``BadRecord`` error naming ``where`` and the fix."""
        try:
            text = self.text(record)
        except KeyError as e:
            raise BadRecord("missing_field", where, f"record has no field {e.args[0]!r} (its fields: "
                            f"{sorted(record)}); name the text field with --text-field, or pass --on-bad-record skip "
                            "to skip and count such records") from None
        except TypeError as e:
            raise BadRecord("bad_field_type", where, f"{e}; fix the record or pass --on-bad-record skip") from None
        except Exception as e:  # a user's text function failing on one record
            raise BadRecord("text_function_error", where, f"text function {self.describe_text()} failed: {e!r}; "
                            "fix the function, or pass --on-bad-record skip to skip and count such records") from None
        if text is not None and not isinstance(text, str):
            raise BadRecord("bad_field_type", where, f"text is {type(text).__name__}, not a string (fields: "
                            f"{sorted(record)}); name the text field with --text-field, or pass --on-bad-record skip")
        return text

    @property
    def columns(self) -> list[str] | None:
        """Record fields the text function reads (lets parquet read only those columns); None = all."""
        return getattr(self.text, "columns", None)

    def describe_text(self) -> str:
        return repr(self.text) if isinstance(self.text, (FieldText, JoinedFields)) else _qualname(self.text)

    def describe(self) -> str:
        text = self.describe_text()
        where = f"hf:{self.hf_path}" + (f"[{self.hf_config}]" if self.hf_config else "") if self.hf_path else "local"
        return f"{where}, text={text}"


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


_FINEMATH = "HuggingFaceTB/finemath"

CORPORA: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in [
        CorpusSpec("finemath-4plus", "FineMath pages scored 4-5 (HuggingFaceTB/finemath, finemath-4plus)",
                   hf_path=_FINEMATH, hf_config="finemath-4plus"),
        CorpusSpec("finemath-3plus", "FineMath pages scored 3-5 (HuggingFaceTB/finemath, finemath-3plus)",
                   hf_path=_FINEMATH, hf_config="finemath-3plus"),
        CorpusSpec("infiwebmath-4plus", "InfiMM-WebMath pages scored 4-5 (HuggingFaceTB/finemath, infiwebmath-4plus)",
                   hf_path=_FINEMATH, hf_config="infiwebmath-4plus"),
        CorpusSpec("infiwebmath-3plus", "InfiMM-WebMath pages scored 3-5 (HuggingFaceTB/finemath, infiwebmath-3plus)",
                   hf_path=_FINEMATH, hf_config="infiwebmath-3plus"),
        CorpusSpec("openwebmath", "OpenWebMath (open-web-math/open-web-math)", hf_path="open-web-math/open-web-math"),
        CorpusSpec("numinamath-1.5", "NuminaMath-1.5 as question + solution text, as in the paper's NuminaQA stage "
                   "(AI-MO/NuminaMath-1.5)", text=JoinedFields(("problem", "solution")), hf_path="AI-MO/NuminaMath-1.5"),
        CorpusSpec("local", "local files in any mix of formats (by extension: .jsonl/.json, .parquet, .txt as one "
                   "document per file, save_to_disk dirs), text in field 'text'"),
        CorpusSpec("jsonl", "local jsonl files, text in field 'text' (e.g. data_prep synthetic's pretrain.jsonl)",
                   file_format="jsonl"),
        CorpusSpec("parquet", "local parquet files, text in column 'text'", file_format="parquet"),
        CorpusSpec("txt", "local text files, one document per file", file_format="txt"),
        CorpusSpec("txt-lines", "local text files, one document per line", file_format="txt_lines"),
    ]
}


def _import_object(dotted: str):
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        module_name, _, attr = dotted.rpartition(".")
    if not module_name or not attr:
        raise ImportError(f"{dotted!r} is not of the form 'package.module:name'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ImportError(f"module {module_name!r} has no attribute {attr!r}") from None


def get_corpus(name: str, *, text_field: str | None = None, file_format: str | None = None) -> CorpusSpec:
    """The corpus called ``name`` in ``CORPORA``, or loaded from a dotted path.

    A dotted path (``package.module:name``) may name a ``CorpusSpec``, or a function record -> text that is applied to
    the local files given with ``--data-files``. ``text_field`` / ``file_format`` override the entry's.
    """
    if name in CORPORA:
        spec = CORPORA[name]
    elif "." in name or ":" in name:
        try:
            obj = _import_object(name)
        except ImportError as e:
            raise ValueError(f"corpus {name!r} is not in the registry and could not be imported as a dotted path "
                             f"({e}); known corpora: {sorted(CORPORA)}") from None
        if isinstance(obj, CorpusSpec):
            spec = obj
        elif callable(obj):
            spec = CorpusSpec(name, f"records of local files, text by {name}", text=obj)
        else:
            raise ValueError(f"{name} is a {type(obj).__name__}; a dotted corpus path must name a CorpusSpec or a "
                             "function record -> text")
    else:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {sorted(CORPORA)} (or a dotted path "
                         "'package.module:name' to a CorpusSpec or a record -> text function)")
    if text_field:
        spec = replace(spec, text=FieldText(text_field))
    if file_format:
        spec = replace(spec, file_format=file_format)
    return spec
