"""Shared helpers of the data_prep tests: tiny tokenizers and corpora made on the fly, the CLI as a subprocess,
and reading an indexed dataset back with megatron-core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

DOCUMENTS = [
    "What is 2 + 3?\n2 + 3 = 5. The answer is \\boxed{5}.",
    "Solve for x: 3x + 5 = 26.\n3x = 26 - 5 = 21. x = 21 / 3 = 7. The answer is \\boxed{7}.",
    "Ünïcödé and émojis 😀 survive: ∫ x dx = x^2/2 + C",
    "A longer document. " * 40,
    "what's 64 + 91?\n64 + 91 = 155. The answer is 155.",
]


def make_tokenizer(out_dir: Path, texts: list[str] | None = None, vocab_size: int = 400) -> Path:
    """The project's tiny BPE (BOS added, EOS = <|endoftext|>) trained on ``texts``."""
    from data_prep.tiny_tokenizer import train_tiny_tokenizer

    return train_tiny_tokenizer(texts or DOCUMENTS * 3, out_dir, vocab_size=vocab_size)


def make_big_vocab_tokenizer(out_dir: Path, vocab_size: int = 70_000) -> Path:
    """A word-level tokenizer with more ids than uint16 holds; words ``w<i>`` map to id i."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<|endoftext|>": 1}
    for i in range(2, vocab_size):
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", unk_token="<unk>").save_pretrained(out_dir)
    return out_dir


def write_jsonl(path: Path, rows: list[dict], field: str = "text") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row if isinstance(row, dict) else {field: row}, ensure_ascii=False) + "\n")
    return path


def expected_tokens(tokenizer_dir: Path, documents: list[str]) -> list[list[int]]:
    """What the command must write: each document tokenized directly, then EOS."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return [tok(d)["input_ids"] + [tok.eos_token_id] for d in documents]


def read_indexed(prefix: str | Path) -> list[list[int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(prefix))
    assert list(ds.document_indices) == list(range(len(ds) + 1)), "one sequence per document"
    return [ds[i].tolist() for i in range(len(ds))]


def cli_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_prep", *map(str, args)], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def start_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "data_prep", *map(str, args)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def title_and_body(record: dict) -> str:
    """A user's own record -> text function, loaded by dotted path ``data_prep_fixtures:title_and_body``."""
    return f"{record['title']}: {record['body']}"
