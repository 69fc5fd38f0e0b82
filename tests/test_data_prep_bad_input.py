"""Bad input to `data_prep tokenize`: each case fails with a message naming the file / line / field and the fix
(or is skipped and counted), before any output exists; a killed run leaves no output pair."""

from __future__ import annotations

import os
import signal
import time

import pytest
from data_prep_fixtures import DOCUMENTS, expected_tokens, make_big_vocab_tokenizer, make_tokenizer, read_indexed, \
    run_cli, start_cli, write_jsonl

from data_prep.tokenize_corpus import BadInputError, TokenizeConfig, tokenize_corpus


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer")


def _run(tmp_path, tokenizer_dir, files, corpus="jsonl", **options):
    cfg = TokenizeConfig(corpus=corpus, data_files=tuple(map(str, files)), tokenizer=str(tokenizer_dir),
                         output_prefix=str(tmp_path / "out" / "c"), progress=False, **{"workers": 1, **options})
    return tokenize_corpus(cfg)


def _outputs(tmp_path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def _corpus_with_bad_line(tmp_path, bad: bytes):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, DOCUMENTS[:2])
    with open(path, "ab") as f:
        f.write(bad + b"\n")
    write_jsonl(tmp_path / "tail.jsonl", DOCUMENTS[2:4])
    path.write_bytes(path.read_bytes() + (tmp_path / "tail.jsonl").read_bytes())
    return path


def test_malformed_json_line_names_file_and_line_or_is_skipped(tmp_path, tokenizer_dir):
    path = _corpus_with_bad_line(tmp_path, b'{"text": "unterminated')
    with pytest.raises(BadInputError, match=rf"{path}:3: malformed JSON .*--on-bad-record skip"):
        _run(tmp_path, tokenizer_dir, [path])
    assert _outputs(tmp_path) == []
    summary = _run(tmp_path, tokenizer_dir, [path], on_bad_record="skip")
    assert summary["skipped"] == {"malformed_json": 1} and summary["documents"] == 4
    assert summary["skipped_examples"][0]["where"] == f"{path}:3"
    assert read_indexed(tmp_path / "out" / "c") == expected_tokens(tokenizer_dir, DOCUMENTS[:4])


def test_invalid_utf8_names_line_or_is_skipped(tmp_path, tokenizer_dir):
    path = _corpus_with_bad_line(tmp_path, b'{"text": "caf\xe9 latin-1"}')
    with pytest.raises(BadInputError, match=rf"{path}:3: invalid UTF-8 at byte 13 .*re-encode"):
        _run(tmp_path, tokenizer_dir, [path])
    assert _run(tmp_path, tokenizer_dir, [path], on_bad_record="skip")["skipped"] == {"invalid_utf8": 1}

    surrogate = _corpus_with_bad_line(tmp_path, b'{"text": "lone \\ud800 surrogate"}')
    with pytest.raises(BadInputError, match=rf"{surrogate}:3: text holds a lone surrogate"):
        _run(tmp_path, tokenizer_dir, [surrogate], force=True)

    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(BadInputError, match=r"bad.txt:2: invalid UTF-8"):
        _run(tmp_path, tokenizer_dir, [tmp_path / "bad.txt"], corpus="txt-lines")


def test_missing_or_wrong_text_field(tmp_path, tokenizer_dir):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "fine"}, {"content": "no text field"}, {"text": 42}])
    with pytest.raises(BadInputError, match=rf"{path}:2: record has no field 'text' \(its fields: \['content'\]\); "
                                            "name the text field with --text-field"):
        _run(tmp_path, tokenizer_dir, [path])
    summary = _run(tmp_path, tokenizer_dir, [path], on_bad_record="skip")
    assert summary["skipped"] == {"bad_field_type": 1, "missing_field": 1} and summary["documents"] == 1
    assert _run(tmp_path, tokenizer_dir, [path], text_field="content", on_bad_record="skip")["documents"] == 1

    (tmp_path / "arr.jsonl").write_text('["a", "list"]\n')
    with pytest.raises(BadInputError, match="arr.jsonl:1: expected a JSON object"):
        _run(tmp_path, tokenizer_dir, [tmp_path / "arr.jsonl"])


def test_empty_documents_are_skipped_and_counted(tmp_path, tokenizer_dir):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, ["first", "", "   \n ", "last", {"text": None}])
    path.write_text(path.read_text() + "\n")  # a blank line too
    summary = _run(tmp_path, tokenizer_dir, [path])
    assert summary["documents"] == 2 and summary["skipped"] == {"blank_line": 1, "empty": 3}
    assert read_indexed(tmp_path / "out" / "c") == expected_tokens(tokenizer_dir, ["first", "last"])

    write_jsonl(tmp_path / "all_empty.jsonl", ["", " "])
    with pytest.raises(ValueError, match="no documents to write"):
        _run(tmp_path, tokenizer_dir, [tmp_path / "all_empty.jsonl"])


def test_vocabulary_larger_than_dtype(tmp_path):
    big = make_big_vocab_tokenizer(tmp_path / "big")
    path = write_jsonl(tmp_path / "c.jsonl", ["w5 w65535 w65536 w69999"])
    with pytest.raises(ValueError, match=r"token ids up to 69999, which do not fit uint16 .*--dtype int32"):
        _run(tmp_path, big, [path], dtype="uint16")
    assert _outputs(tmp_path) == []
    summary = _run(tmp_path, big, [path], dtype="auto")
    assert summary["dtype"] == "int32"
    assert read_indexed(tmp_path / "out" / "c") == [[5, 65535, 65536, 69999, 1]]


@pytest.mark.cli
def test_missing_inputs_and_unknown_names_fail_before_work(tmp_path, tokenizer_dir):
    with pytest.raises(FileNotFoundError, match=r"'nowhere/\*.jsonl' matches no files"):
        _run(tmp_path, tokenizer_dir, ["nowhere/*.jsonl"])
    with pytest.raises(ValueError, match=r"unknown corpus 'finemath'; known corpora: \[.*'finemath-4plus'.*'jsonl'"):
        _run(tmp_path, tokenizer_dir, [], corpus="finemath")
    with pytest.raises(ValueError, match="could not be imported as a dotted path"):
        _run(tmp_path, tokenizer_dir, [], corpus="no_such_pkg.mod:fn")
    path = write_jsonl(tmp_path / "c.jsonl", DOCUMENTS)
    with pytest.raises(ValueError, match="reads local files: pass them with --data-files"):
        _run(tmp_path, tokenizer_dir, [], corpus="jsonl")
    with pytest.raises(FileNotFoundError, match="tokenizer directory .* does not exist"):
        _run(tmp_path, tmp_path / "no_tokenizer", [path])
    (tmp_path / "c.csv").write_text("text\nhello\n")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*c.csv.*--format"):
        _run(tmp_path, tokenizer_dir, [tmp_path / "c.csv"], corpus="numinamath-1.5")
    assert _outputs(tmp_path) == []

    result = run_cli("tokenize", "--corpus", "finemath", "--tokenizer", tokenizer_dir, "--output-prefix", tmp_path / "x")
    assert result.returncode == 2 and "error: unknown corpus 'finemath'; known corpora" in result.stderr


def _kill_midway(tmp_path, tokenizer_dir, sig) -> tuple[int, str]:
    """Start the CLI on a FIFO it blocks on after writing its first batches, wait for its temporary output, signal
    it."""
    fifo = tmp_path / "stream.jsonl"
    os.mkfifo(fifo)
    proc = start_cli("tokenize", "--corpus", "jsonl", "--data-files", fifo, "--tokenizer", tokenizer_dir,
                     "--output-prefix", tmp_path / "out" / "c", "--workers", "2", "--batch-size", "2", "--no-progress")
    deadline = time.monotonic() + 300
    writer = None
    try:
        while writer is None:  # the reader opens the FIFO only after its imports
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        os.write(writer, "".join(f'{{"text": "doc {i}"}}\n' for i in range(100)).encode())  # > the read-ahead
        while not list((tmp_path / "out").glob("c.tmp-*.bin")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, stderr


@pytest.mark.cli
def test_killed_run_leaves_no_output_pair_and_the_rerun_succeeds(tmp_path, tokenizer_dir):
    returncode, _ = _kill_midway(tmp_path, tokenizer_dir, signal.SIGKILL)
    assert returncode == -signal.SIGKILL
    assert not any(p.name.startswith("c.") and not p.name.startswith("c.tmp-") for p in (tmp_path / "out").iterdir())
    path = write_jsonl(tmp_path / "c.jsonl", DOCUMENTS)
    _run(tmp_path, tokenizer_dir, [path])
    assert _outputs(tmp_path) == ["c.bin", "c.idx", "c.summary.json"]  # the dead run's temp files are gone too
    assert read_indexed(tmp_path / "out" / "c") == expected_tokens(tokenizer_dir, DOCUMENTS)


@pytest.mark.cli
def test_terminated_run_cleans_up_after_itself(tmp_path, tokenizer_dir):
    returncode, stderr = _kill_midway(tmp_path, tokenizer_dir, signal.SIGTERM)
    assert returncode == 130 and "interrupted" in stderr
    assert _outputs(tmp_path) == []
