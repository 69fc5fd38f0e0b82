"""Tokenize a corpus into a Megatron indexed dataset: PREFIX.bin / PREFIX.idx, plus PREFIX.summary.json.

    python -m data_prep tokenize --corpus jsonl --data-files 'data/*.jsonl' --tokenizer tok/ --output-prefix out/c
    tokenize_corpus(TokenizeConfig(corpus="jsonl", data_files=("data/*.jsonl",), tokenizer="tok/", output_prefix=...))

Every document becomes ``tokenizer(text)["input_ids"] + [EOD]`` (one sequence, one document in Megatron's index),
in input order whatever the number of workers. The main process reads records (so errors name the file and line)
and writes through megatron-core's ``IndexedDatasetBuilder``; worker processes encode. Records that cannot be read
stop the run or, with ``on_bad_record="skip"``, are skipped and counted; empty documents are always skipped and
counted. Inputs, tokenizer and options are fingerprinted: a re-run with the same ones does nothing unless forced.
Workers are spawned processes: a script calling ``tokenize_corpus`` with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from data_prep.corpora import CorpusSpec, get_corpus
from data_prep.encoder import DTYPES, DocumentEncoder, EncoderSettings, encode_in_worker, init_worker
from data_prep.indexed_output import IndexedOutput
from data_prep.records import BadRecord, RecordSource, resolve_data_files

FORMAT_VERSION = 1
"""Bump when the bytes written for the same inputs change, so old outputs are rebuilt."""
ON_BAD_RECORD = ("error", "skip")
ALWAYS_SKIPPED = frozenset({"empty", "blank_line"})
"""Skip reasons that are never errors: documents with no text."""
MAX_SKIPPED_EXAMPLES = 20
PREFETCH_BATCHES_PER_WORKER = 16
"""Batches read ahead per worker while the output writer (megatron-core) is still being imported."""


class BadInputError(ValueError):
    """A record that stops the run (``on_bad_record="error"``); the message names its file and line."""


@dataclass
class TokenizeConfig:
    corpus: str
    """Registry name (``python -m data_prep corpora``) or dotted path to a CorpusSpec or record -> text function."""
    tokenizer: str
    """Hugging Face tokenizer directory (``AutoTokenizer``, fast tokenizers only); read offline."""
    output_prefix: str
    """Writes OUTPUT_PREFIX.bin, OUTPUT_PREFIX.idx and OUTPUT_PREFIX.summary.json."""
    data_files: tuple[str, ...] = ()
    """Local files or globs (jsonl, parquet, txt, save_to_disk dirs); they replace the corpus's own source, so a
    Hub corpus given local copies never touches the network."""
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    """Encoder processes; 1 encodes in this process."""
    on_bad_record: str = "error"
    """error: stop at the first malformed, non-UTF-8 or field-less record, naming file and line; skip: skip and count
    it in the summary. Empty documents are always skipped and counted."""
    force: bool = False
    """Rebuild even when the output was already built from the same inputs and options."""
    dtype: str = "auto"
    """Token dtype of the .bin: auto (uint16 when every token id fits, else int32), uint16 or int32."""
    file_format: str | None = None
    """Override how local files are read (jsonl, parquet, txt, txt_lines, hf_disk); default from the corpus or the
    file extension."""
    text_field: str | None = None
    """Override the record field that holds the text."""
    split: str | None = None
    """Override the split read from a Hub dataset or a save_to_disk DatasetDict."""
    add_special_tokens: bool = True
    """Let the tokenizer add its special tokens (Llama-3: <|begin_of_text|>), as RL prompts are tokenized."""
    eod_token: str | None = None
    """Token appended after every document; default the model's document-end token (DOCUMENT_END_TOKENS, when its
    vocabulary has one: a chat model's EOS ends a turn, not a document), else its EOS token."""
    batch_size: int = 256
    """Documents per batch handed to a worker."""
    batch_chars: int = 1_000_000
    """A batch also ends at this many characters, so memory stays flat with very long documents."""
    max_documents: int | None = None
    """Stop after this many documents (for samples and smoke tests); None reads everything."""
    progress: bool = True
    """Show a tqdm progress bar on stderr."""

    def __post_init__(self):
        if self.on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {self.on_bad_record!r}")
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise ValueError(f"dtype must be auto or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if min(self.workers, self.batch_size, self.batch_chars) < 1:
            raise ValueError(f"workers, batch_size and batch_chars must be >= 1, got {self.workers}, "
                             f"{self.batch_size} and {self.batch_chars}")
        if self.max_documents is not None and self.max_documents < 1:
            raise ValueError(f"max_documents must be >= 1 or None, got {self.max_documents}")
        self.data_files = tuple(self.data_files)


# ---- setup: everything that can be wrong with the inputs is found here, before any work ----------------------


def load_tokenizer(path: str):
    if not Path(path).is_dir():
        raise FileNotFoundError(f"tokenizer directory {path!r} does not exist; pass a Hugging Face tokenizer "
                                "directory (one with tokenizer.json), e.g. the output of data_prep synthetic")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises many types for a broken directory
        raise ValueError(f"could not load a tokenizer from {path!r}: {e}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{path!r} holds a slow (Python) tokenizer; data_prep needs a fast one (tokenizer.json)")
    return tokenizer


def max_token_id(tokenizer) -> int:
    return max(len(tokenizer) - 1, max(tokenizer.get_vocab().values(), default=0))


def choose_dtype(requested: str, max_id: int, tokenizer_path: str) -> str:
    if requested == "auto":
        return "uint16" if max_id <= np.iinfo(np.uint16).max else "int32"
    if max_id > np.iinfo(DTYPES[requested]).max:
        raise ValueError(f"tokenizer {tokenizer_path!r} has token ids up to {max_id}, which do not fit {requested} "
                         f"(max {np.iinfo(DTYPES[requested]).max}); use --dtype int32 or --dtype auto")
    return requested


DOCUMENT_END_TOKENS = ("<|endoftext|>", "<|end_of_text|>")
"""Pretraining document ends (GPT-2 / Qwen / SmolLM, Llama 3). Instruct models keep them in their vocabulary but make
EOS the end of a chat turn (<|im_end|>, <|eot_id|>), which is not what separates pretraining documents."""


def resolve_eod(tokenizer, eod_token: str | None) -> int:
    vocab = tokenizer.get_vocab()
    if eod_token is None:
        document_end = next((token for token in DOCUMENT_END_TOKENS if token in vocab), None)
        if document_end is not None:
            return int(vocab[document_end])  # SmolLM2 registers its <|endoftext|> as the unknown token: by name
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token to end documents with; name one with --eod-token")
        return int(tokenizer.eos_token_id)
    if eod_token not in vocab:
        raise ValueError(f"--eod-token {eod_token!r} is not a token of this tokenizer")
    return int(vocab[eod_token])


def open_source(spec: CorpusSpec, data_files: tuple[str, ...], split: str | None) -> RecordSource:
    patterns = data_files or spec.data_files
    files = resolve_data_files(patterns) if patterns else None
    if not files and not spec.hf_path:
        raise ValueError(f"corpus {spec.name!r} reads local files: pass them with --data-files GLOB")
    return RecordSource(files=files, file_format=spec.file_format, columns=spec.columns, hf_path=spec.hf_path,
                        hf_config=spec.hf_config, hf_split=split or spec.hf_split, streaming=spec.streaming)


def fingerprint(cfg: TokenizeConfig, spec: CorpusSpec, source: RecordSource, tokenizer_sha: str, dtype: str,
                eod_id: int) -> str:
    key = {"format_version": FORMAT_VERSION, "corpus": spec.name, "text": spec.describe(), "inputs": source.describe(),
           "tokenizer_sha256": tokenizer_sha, "dtype": dtype, "eod_id": eod_id,
           "add_special_tokens": cfg.add_special_tokens, "on_bad_record": cfg.on_bad_record,
           "max_documents": cfg.max_documents}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


# ---- the run ----------------------------------------------------------------------------------------------------


class _Tally:
    def __init__(self):
        self.skipped: collections.Counter = collections.Counter()
        self.examples: list[dict] = []
        self.documents = 0
        self.tokens = 0

    def skip(self, bad: BadRecord) -> None:
        self.skipped[bad.reason] += 1
        if len(self.examples) < MAX_SKIPPED_EXAMPLES:
            self.examples.append({"where": bad.where, "reason": bad.reason, "detail": bad.detail})


def _document_batches(source: RecordSource, spec: CorpusSpec, cfg: TokenizeConfig, tally: _Tally,
                      bar) -> Iterator[list[str]]:
    batch: list[str] = []
    batch_chars = pending_bytes = accepted = 0
    for item in source:
        pending_bytes += item.nbytes
        try:
            if isinstance(item.record, BadRecord):
                raise item.record
            text = spec.get_text(item.record, item.where)
            if text is None or not text.strip():
                raise BadRecord("empty", item.where, "empty document")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as e:
                raise BadRecord("invalid_utf8", item.where, f"text holds a lone surrogate at character {e.start} "
                                "(a \\ud800-style JSON escape); fix it or pass --on-bad-record skip") from None
        except BadRecord as bad:
            if bad.reason not in ALWAYS_SKIPPED and cfg.on_bad_record == "error":
                raise BadInputError(str(bad)) from None
            tally.skip(bad)
            continue
        batch.append(text)
        batch_chars += len(text)
        accepted += 1
        if (len(batch) >= cfg.batch_size or batch_chars >= cfg.batch_chars
                or (cfg.max_documents and accepted >= cfg.max_documents)):
            bar.update(pending_bytes if bar.total else len(batch))
            yield batch
            batch, batch_chars, pending_bytes = [], 0, 0
        if cfg.max_documents and accepted >= cfg.max_documents:
            return
    if batch:
        bar.update(pending_bytes if bar.total else len(batch))
        yield batch


def _make_builder(prefix: str, dtype: str):
    with warnings.catch_warnings():  # megatron-core warns at import when transformer-engine / apex are absent
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    class BatchedBuilder(IndexedDatasetBuilder):
        """``add_document`` for a whole batch: the same bytes and index entries as one call per document."""

        def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
            self.data_file.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes(order="C"))
            first = len(self.sequence_lengths)
            self.sequence_lengths.extend(lengths.tolist())
            self.document_indices.extend(range(first + 1, first + 1 + len(lengths)))

    return BatchedBuilder(f"{prefix}.bin", dtype=DTYPES[dtype])


def _encode_all(batches: Iterator[list[str]], settings: EncoderSettings, workers: int, builder_factory,
                tally: _Tally, bar):
    """Encode batches and append them, in input order, to the builder (created before the first write)."""
    builder = None

    def write(result):
        tokens, lengths = result
        builder.add_documents(tokens, lengths)
        tally.documents += len(lengths)
        tally.tokens += int(tokens.size)
        bar.set_postfix_str(f"{tally.documents} docs, {tally.tokens} tokens", refresh=False)

    if workers == 1:
        encoder = DocumentEncoder(settings)
        for batch in batches:
            builder = builder or builder_factory()
            write(encoder(batch))
        return builder
    import multiprocessing

    pool = None
    in_flight: collections.deque = collections.deque()
    try:
        for batch in batches:
            if pool is None:  # started only once the first batch is read: bad input fails before any spawn
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=init_worker, initargs=(settings, os.getpid()))
            in_flight.append(pool.submit(encode_in_worker, batch))
            # Before the first write, read ahead so the workers encode while megatron-core is being imported.
            while len(in_flight) >= (2 * workers if builder else PREFETCH_BATCHES_PER_WORKER * workers):
                builder = builder or builder_factory()
                write(in_flight.popleft().result())
        builder = builder or builder_factory()
        while in_flight:
            write(in_flight.popleft().result())
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return builder


def tokenize_corpus(cfg: TokenizeConfig) -> dict:
    """Build OUTPUT_PREFIX.bin/.idx/.summary.json (or find them up to date); returns the summary."""
    spec = get_corpus(cfg.corpus, text_field=cfg.text_field, file_format=cfg.file_format)
    source = open_source(spec, cfg.data_files, cfg.split)
    output = IndexedOutput(cfg.output_prefix)
    tokenizer = load_tokenizer(cfg.tokenizer)
    dtype = choose_dtype(cfg.dtype, max_token_id(tokenizer), cfg.tokenizer)
    eod_id = resolve_eod(tokenizer, cfg.eod_token)
    tokenizer_json = tokenizer.backend_tokenizer.to_str()
    tokenizer_sha = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    fp = fingerprint(cfg, spec, source, tokenizer_sha, dtype, eod_id)
    if not cfg.force and (existing := output.up_to_date(fp)):
        return dict(existing, up_to_date=True)

    from tqdm import tqdm

    output.prepare()
    settings = EncoderSettings(tokenizer_json, cfg.add_special_tokens, eod_id, dtype)
    tally = _Tally()
    start = time.perf_counter()
    total = source.total_bytes
    with output.staging() as temp_prefix, tqdm(total=total, unit="B" if total else " docs", unit_scale=True,
                                               desc=f"tokenize {spec.name}", disable=not cfg.progress,
                                               mininterval=0.5) as bar:
        batches = _document_batches(source, spec, cfg, tally, bar)
        builder = _encode_all(batches, settings, cfg.workers, lambda: _make_builder(temp_prefix, dtype), tally, bar)
        if tally.documents == 0:
            raise ValueError(f"no documents to write: every record was skipped ({dict(tally.skipped)}); "
                             f"first skipped: {tally.examples[:3]}")
        builder.finalize(f"{temp_prefix}.idx")
        seconds = time.perf_counter() - start
        summary = {
            "corpus": spec.name, "corpus_source": spec.describe(), "inputs": source.describe(),
            "tokenizer": {"path": str(Path(cfg.tokenizer).resolve()), "sha256": tokenizer_sha,
                          "vocab_size": len(tokenizer), "max_token_id": max_token_id(tokenizer), "eod_id": eod_id,
                          "add_special_tokens": cfg.add_special_tokens},
            "dtype": dtype, "documents": tally.documents, "tokens": tally.tokens,
            "skipped": dict(sorted(tally.skipped.items())), "skipped_total": sum(tally.skipped.values()),
            "skipped_examples": tally.examples, "workers": cfg.workers, "seconds": round(seconds, 3),
            "tokens_per_second": round(tally.tokens / max(seconds, 1e-9), 1), "fingerprint": fp,
            "config": {k: v for k, v in asdict(cfg).items() if k != "progress"},
            "created": datetime.datetime.now().isoformat(timespec="seconds"), "up_to_date": False,
        }
        return output.commit(summary)
