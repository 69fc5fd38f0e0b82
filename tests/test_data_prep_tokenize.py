"""`python -m data_prep tokenize`: corpora round-trip through megatron-core's indexed dataset."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_prep_fixtures import DOCUMENTS, expected_tokens, make_tokenizer, read_indexed, run_cli, write_jsonl

from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def _tokenize(tmp_path, tokenizer_dir, corpus, files, name="out", **options):
    cfg = TokenizeConfig(corpus=corpus, data_files=tuple(map(str, files)), tokenizer=str(tokenizer_dir),
                         output_prefix=str(tmp_path / name), progress=False, **{"workers": 1, **options})
    return tokenize_corpus(cfg)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.workers)])
def test_jsonl_round_trip_equals_direct_tokenization(tmp_path, tokenizer_dir, workers):
    docs = DOCUMENTS * 7  # several batches of 4
    write_jsonl(tmp_path / "a.jsonl", docs[:20])
    write_jsonl(tmp_path / "b.jsonl", docs[20:])
    summary = _tokenize(tmp_path, tokenizer_dir, "jsonl", [tmp_path / "*.jsonl"], workers=workers, batch_size=4)
    expected = expected_tokens(tokenizer_dir, docs)
    assert read_indexed(tmp_path / "out") == expected
    assert expected[0][0] == 0 and expected[0][-1] == 1  # BOS first, EOD last
    assert summary["documents"] == len(docs) and summary["tokens"] == sum(map(len, expected))
    assert summary["skipped_total"] == 0 and summary["dtype"] == "uint16" and summary["workers"] == workers
    assert json.loads((tmp_path / "out.summary.json").read_text())["fingerprint"] == summary["fingerprint"]


def test_parquet_and_txt_round_trip(tmp_path, tokenizer_dir):
    pq.write_table(pa.table({"text": DOCUMENTS, "id": list(range(len(DOCUMENTS)))}), tmp_path / "c.parquet")
    _tokenize(tmp_path, tokenizer_dir, "parquet", [tmp_path / "c.parquet"], name="pq")
    assert read_indexed(tmp_path / "pq") == expected_tokens(tokenizer_dir, DOCUMENTS)

    for i, doc in enumerate(DOCUMENTS[:3]):
        (tmp_path / f"doc{i}.txt").write_text(doc, encoding="utf-8")
    _tokenize(tmp_path, tokenizer_dir, "txt", [tmp_path / "doc*.txt"], name="txt")
    assert read_indexed(tmp_path / "txt") == expected_tokens(tokenizer_dir, DOCUMENTS[:3])

    (tmp_path / "lines.txt").write_text("first line\nsecond line\n\nthird\n", encoding="utf-8")
    summary = _tokenize(tmp_path, tokenizer_dir, "txt-lines", [tmp_path / "lines.txt"], name="lines")
    assert read_indexed(tmp_path / "lines") == expected_tokens(tokenizer_dir, ["first line", "second line", "third"])
    assert summary["skipped"] == {"empty": 1}


def test_hub_corpus_reads_local_copies_and_joins_fields(tmp_path, tokenizer_dir):
    """numinamath-1.5 with --data-files never touches the Hub; its text is problem + solution."""
    rows = [{"problem": "What is 1 + 1?", "solution": "1 + 1 = 2. \\boxed{2}", "source": "x"},
            {"problem": "  Find x. ", "solution": "x = 3.", "source": "y"}]
    write_jsonl(tmp_path / "numina.jsonl", rows)
    summary = _tokenize(tmp_path, tokenizer_dir, "numinamath-1.5", [tmp_path / "numina.jsonl"])
    texts = ["What is 1 + 1?\n\n1 + 1 = 2. \\boxed{2}", "Find x.\n\nx = 3."]
    assert read_indexed(tmp_path / "out") == expected_tokens(tokenizer_dir, texts)
    assert summary["corpus"] == "numinamath-1.5"


def test_save_to_disk_directory_and_dotted_path_text_function(tmp_path, tokenizer_dir):
    import datasets

    datasets.Dataset.from_dict({"title": ["T1", "T2"], "body": ["b1", "b2"]}).save_to_disk(str(tmp_path / "ds"))
    _tokenize(tmp_path, tokenizer_dir, "data_prep_fixtures:title_and_body", [tmp_path / "ds"])
    assert read_indexed(tmp_path / "out") == expected_tokens(tokenizer_dir, ["T1: b1", "T2: b2"])


def test_rerun_is_a_no_op_until_inputs_change_or_forced(tmp_path, tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCUMENTS)
    first = _tokenize(tmp_path, tokenizer_dir, "jsonl", [corpus])
    stamp = (tmp_path / "out.bin").stat().st_mtime_ns
    again = _tokenize(tmp_path, tokenizer_dir, "jsonl", [corpus], workers=2)  # worker count changes no output byte
    assert again["up_to_date"] and (tmp_path / "out.bin").stat().st_mtime_ns == stamp
    forced = _tokenize(tmp_path, tokenizer_dir, "jsonl", [corpus], force=True)
    assert not forced["up_to_date"] and forced["fingerprint"] == first["fingerprint"]
    write_jsonl(corpus, DOCUMENTS[:2])
    changed = _tokenize(tmp_path, tokenizer_dir, "jsonl", [corpus])
    assert not changed["up_to_date"] and changed["documents"] == 2
    assert read_indexed(tmp_path / "out") == expected_tokens(tokenizer_dir, DOCUMENTS[:2])


def test_dtype_int32_and_no_special_tokens(tmp_path, tokenizer_dir):
    corpus = write_jsonl(tmp_path / "c.jsonl", DOCUMENTS[:2])
    summary = _tokenize(tmp_path, tokenizer_dir, "jsonl", [corpus], dtype="int32", add_special_tokens=False)
    assert summary["dtype"] == "int32"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert read_indexed(tmp_path / "out") == [tok(d, add_special_tokens=False)["input_ids"] + [1] for d in DOCUMENTS[:2]]


@pytest.mark.cli
def test_cli_round_trips_jsonl_parquet_and_txt_and_prints_counts(tmp_path, tokenizer_dir):
    write_jsonl(tmp_path / "a.jsonl", DOCUMENTS[:2] + [""])
    pq.write_table(pa.table({"text": DOCUMENTS[2:4]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text(DOCUMENTS[4], encoding="utf-8")
    result = run_cli("tokenize", "--corpus", "local", "--data-files", tmp_path / "a.jsonl", tmp_path / "b.parquet",
                     tmp_path / "c.txt", "--tokenizer", tokenizer_dir, "--output-prefix", tmp_path / "out" / "cli",
                     "--workers", "2", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert f"{len(DOCUMENTS)} documents" in result.stdout and "empty: 1" in result.stdout
    assert read_indexed(tmp_path / "out" / "cli") == expected_tokens(tokenizer_dir, DOCUMENTS)
    summary = json.loads((tmp_path / "out" / "cli.summary.json").read_text())
    assert summary["skipped"] == {"empty": 1} and summary["skipped_examples"][0]["where"] == f"{tmp_path / 'a.jsonl'}:3"
    assert [i["format"] for i in summary["inputs"]] == ["jsonl", "parquet", "txt"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cli.bin", "cli.idx", "cli.summary.json"]


def test_documents_end_with_the_models_document_end_token_not_a_chat_models_eos(tmp_path):
    """An instruct model's EOS ends a chat turn (<|im_end|>); its vocabulary still has the pretraining document end."""
    from tiny_models import save_char_tokenizer
    from transformers import AutoTokenizer

    from data_prep.tokenize_corpus import resolve_eod

    tok = AutoTokenizer.from_pretrained(save_char_tokenizer(tmp_path / "tok"))
    assert resolve_eod(tok, None) == tok.eos_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    assert resolve_eod(tok, None) == tok.convert_tokens_to_ids("<|endoftext|>") != tok.eos_token_id
    assert resolve_eod(tok, "<|im_end|>") == tok.eos_token_id  # named: as asked
    tok.unk_token = "<|endoftext|>"  # SmolLM2 registers its document end as the unknown token
    assert resolve_eod(tok, "<|endoftext|>") == tok.convert_tokens_to_ids("<|endoftext|>")
    with pytest.raises(ValueError, match="--eod-token '<nope>' is not a token of this tokenizer"):
        resolve_eod(tok, "<nope>")
