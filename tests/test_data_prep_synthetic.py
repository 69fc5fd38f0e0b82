"""The bundled synthetic math data: correct worked solutions, graded levels, disjoint splits, a usable tokenizer,
determinism, and an idempotent, atomic writer."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from data_prep_fixtures import run_cli

from data_prep.questions import load_questions_spec
from data_prep.synthetic import SyntheticConfig, generate, make_synthetic_dataset
from data_prep.synthetic_problems import GENERATORS, LEVELS

SMALL = dict(seed=3, num_pretrain_docs=1500, num_train_questions=300, num_test_questions=100)
_EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "data", **SMALL)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _evaluate(expression: str) -> int:
    """Value of 'a op b [op c]' with + - * and the usual precedence."""
    tokens = expression.split()
    while "*" in tokens:
        i = tokens.index("*")
        tokens[i - 1 : i + 2] = [str(int(tokens[i - 1]) * int(tokens[i + 1]))]
    value = int(tokens[0])
    for op, operand in zip(tokens[1::2], tokens[2::2]):
        value = _OPS[op](value, int(operand))
    return value


def _check_arithmetic(text: str) -> int:
    """Every 'a op b = c' in the worked steps is true; returns the number checked."""
    equations = _EQUATION.findall(text)
    for a, op, b, c in equations:
        assert _OPS[op](int(a), int(b)) == int(c), text
    return len(equations)


def test_every_level_generates_true_worked_solutions_with_boxed_answers():
    import random

    rng = random.Random(0)
    for level in LEVELS:
        for _ in range(300):
            problem = GENERATORS[level](rng)
            assert problem.level == level and problem.answer >= 0
            assert _check_arithmetic(problem.steps) >= (1 if level <= 2 else 2)
            assert problem.steps.rstrip(".").endswith(f"= {problem.answer}")
            doc = problem.document(boxed=True)
            assert doc.startswith(problem.question + "\n") and doc.endswith(f"The answer is \\boxed{{{problem.answer}}}.")
            if level <= 3:  # the question's own expression has the answer as its value
                expression = re.search(r"(\d+(?: [-+*] \d+)+)", problem.question).group(1)
                assert _evaluate(expression) == problem.answer
            if level == 5:
                a, sign, b, c = re.search(r"(\d+)x ([-+]) (\d+) = (\d+)", problem.question).groups()
                assert int(a) * problem.answer + (int(b) if sign == "+" else -int(b)) == int(c)


def test_splits_are_disjoint_balanced_and_deterministic(dataset):
    train, test = _rows(dataset.rl_train), _rows(dataset.rl_test)
    pretrain = [r["text"] for r in _rows(dataset.pretrain)]
    assert len(train) == 300 and len(test) == 100 and len(pretrain) == 1500
    assert all(set(r) == {"question", "answer", "level"} for r in train + test)
    train_q, test_q = [r["question"] for r in train], [r["question"] for r in test]
    assert len(set(train_q)) == len(train_q) and len(set(test_q)) == len(test_q)
    assert not set(train_q) & set(test_q)
    pretrain_q = {doc.split("\n", 1)[0] for doc in pretrain}
    assert not pretrain_q & set(test_q)
    assert Counter(r["level"] for r in train) == {level: 60 for level in LEVELS}
    assert Counter(r["level"] for r in test) == {level: 20 for level in LEVELS}
    assert sum(_check_arithmetic(doc) for doc in pretrain) > len(pretrain)

    again = generate(SyntheticConfig(**SMALL))
    assert again[0] == pretrain and [p.question for p in again[2]] == test_q
    other_seed = generate(SyntheticConfig(**dict(SMALL, seed=4)))
    assert [p.question for p in other_seed[2]] != test_q


def test_pretraining_answers_are_boxed_by_style(dataset):
    docs = [r["text"] for r in _rows(dataset.pretrain)]
    boxed = [doc.endswith("}.") for doc in docs]
    assert 0.6 < sum(boxed) / len(docs) < 0.8  # textbook ~55% always boxed + forum ~45% boxed at 0.3
    all_boxed = generate(SyntheticConfig(**dict(SMALL, forum_boxed_rate=1.0)))[0]
    assert all(doc.endswith("}.") for doc in all_boxed)
    for doc in docs[:200]:
        question, solution = doc.split("\n", 1)
        answer = re.search(r"The answer is (?:\\boxed\{)?(\d+)", solution).group(1)
        assert solution.rstrip(".}").endswith(answer)


def test_tokenizer_has_specials_single_digit_tokens_and_short_responses(dataset):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(dataset.tokenizer))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<|begin_of_text|>", "<|endoftext|>", "<|pad|>")
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3 and len(tok) <= 1024
    for n in (0, 7, 42, 105, 9876):
        pieces = tok.convert_ids_to_tokens(tok(f"x = {n}", add_special_tokens=False)["input_ids"])
        assert [p for p in pieces if p.isdigit()] == list(str(n))
    lengths = []
    for row in _rows(dataset.pretrain)[:500]:
        ids = tok(row["text"])["input_ids"]
        assert ids[0] == tok.bos_token_id and tok.decode(ids, skip_special_tokens=True) == row["text"]
        question, solution = row["text"].split("\n", 1)
        assert tok(row["text"])["input_ids"][: len(tok(question)["input_ids"])] == tok(question)["input_ids"]
        lengths.append(len(ids) - len(tok(question)["input_ids"]) + 1)  # response tokens, EOS included
    assert 10 <= min(lengths) and max(lengths) <= 45


def test_rl_files_load_as_question_sets(dataset):
    questions = load_questions_spec(f"{dataset.rl_test}?levels=4-5")
    assert len(questions) == 40 and {q.level for q in questions} == {4, 5}
    assert all(q.answer.isdigit() and q.source.startswith(str(dataset.rl_test)) for q in questions)


def test_writer_is_idempotent_and_regenerates_on_change(dataset):
    stamp = {p: p.stat().st_mtime_ns for p in (dataset.pretrain, dataset.rl_test, dataset.tokenizer / "tokenizer.json")}
    make_synthetic_dataset(dataset.root, **SMALL)
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp
    dataset.rl_test.unlink()  # incomplete: regenerated, byte-identical
    make_synthetic_dataset(dataset.root, **SMALL)
    assert dataset.rl_test.exists()
    manifest = json.loads(dataset.manifest.read_text())
    assert manifest["config"]["seed"] == 3 and manifest["counts"]["test_questions"] == 100


def test_identical_bytes_in_a_fresh_directory_and_no_leftovers_on_failure(dataset, tmp_path, monkeypatch):
    other = make_synthetic_dataset(tmp_path / "again", **SMALL)
    for name in ("pretrain.jsonl", "rl_train.jsonl", "rl_test.jsonl", "tokenizer/tokenizer.json"):
        assert (other.root / name).read_bytes() == (dataset.root / name).read_bytes(), name

    import data_prep.tiny_tokenizer

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(data_prep.tiny_tokenizer, "train_tiny_tokenizer", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make_synthetic_dataset(tmp_path / "failed", **SMALL)
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == [".synthetic.lock"]


def test_too_many_questions_for_a_level_is_a_clear_error():
    with pytest.raises(ValueError, match="level 1 ran out of distinct questions .* ask for fewer train questions"):
        generate(SyntheticConfig(num_train_questions=10_000, num_test_questions=50, num_pretrain_docs=10))


@pytest.mark.cli
def test_cli_generates_then_does_nothing(tmp_path):
    """Runs with HF_HUB_OFFLINE=1; generation reloads the saved tokenizer with AutoTokenizer before committing it."""
    args = ("synthetic", "--out", tmp_path / "d", "--seed", "1", "--num-pretrain-docs", "200",
            "--num-train-questions", "50", "--num-test-questions", "25", "--vocab-size", "512")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert '"pretrain_docs": 200' in first.stdout
    stamp = (tmp_path / "d" / "pretrain.jsonl").stat().st_mtime_ns
    assert run_cli(*args).returncode == 0 and (tmp_path / "d" / "pretrain.jsonl").stat().st_mtime_ns == stamp
