"""RL question sets: MATH (level filter), GSM8K and generic jsonl from jsonl / parquet / save_to_disk / MATH's own
per-problem json layout, with gold answers extracted the standard way."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_prep_fixtures import write_jsonl

from data_prep.questions import Question, QuestionSource, load_questions, load_questions_spec, parse_levels

MATH_ROWS = [
    {"problem": "Compute $\\dbinom{8}{4}$.", "level": "Level 2", "type": "Counting & Probability",
     "solution": "$\\dbinom{8}{4} = \\dfrac{8!}{4!4!} = \\boxed{70}.$"},
    {"problem": "Find the largest $x$ with $x^2 \\le 2$.", "level": "Level 4", "type": "Algebra",
     "solution": "Guess \\boxed{1}? No: $x = \\boxed{\\sqrt{2}}$."},
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{3}$?", "level": "Level 5", "type": "Prealgebra",
     "solution": "$\\frac{3}{6}+\\frac{2}{6}=\\boxed{\\frac{5}{6}}$"},
    {"problem": "An unrated problem.", "level": "Level ?", "type": "Geometry", "solution": "It is $\\boxed{3}$."},
    {"problem": "Already answered.", "level": 3, "solution": "long text", "answer": "12"},
]
GSM8K_ROWS = [
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much "
                 "did she earn?", "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, "
                 "she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "A farm has 1,200 cows and buys 300 more. How many cows?", "answer": "1,200 + 300 = 1,500\n#### 1,500"},
]


def test_math_gold_answers_and_level_filter(tmp_path):
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    everything = load_questions(QuestionSource("math", str(path)))
    assert [q.answer for q in everything] == ["70", "\\sqrt{2}", "\\frac{5}{6}", "3", "12"]
    assert [q.level for q in everything] == [2, 4, 5, None, 3]
    assert everything[1] == Question(MATH_ROWS[1]["problem"], "\\sqrt{2}", f"{path}:2", 4)
    hard = load_questions_spec(f"math:{path}?levels=3-5")
    assert [q.answer for q in hard] == ["\\sqrt{2}", "\\frac{5}{6}", "12"]
    assert [q.level for q in load_questions_spec(f"math:{path}", levels=[2])] == [2]


def test_math_from_parquet_save_to_disk_and_per_problem_json_files(tmp_path):
    pq.write_table(pa.Table.from_pylist(MATH_ROWS[:3]), tmp_path / "math.parquet")
    assert [q.answer for q in load_questions(f"math:{tmp_path / 'math.parquet'}")] == ["70", "\\sqrt{2}", "\\frac{5}{6}"]

    import datasets

    rows = MATH_ROWS[:4]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2]), "test": datasets.Dataset.from_list(rows[2:])})
    dd.save_to_disk(str(tmp_path / "hf"))
    assert [q.answer for q in load_questions(f"math:{tmp_path / 'hf'}")] == ["70", "\\sqrt{2}"]  # train by default
    test = load_questions(f"math:{tmp_path / 'hf'}?split=test&levels=5")
    assert [(q.answer, q.level) for q in test] == [("\\frac{5}{6}", 5)]
    with pytest.raises(ValueError, match=r"holds splits \['test', 'train'\]; choose one with split=NAME"):
        load_questions(f"math:{tmp_path / 'hf'}?split=valid")

    layout = tmp_path / "MATH" / "train"
    for subject, row in (("algebra", MATH_ROWS[1]), ("prealgebra", MATH_ROWS[2])):
        (layout / subject).mkdir(parents=True)
        (layout / subject / "1.json").write_text(json.dumps(row, indent=4))
    got = load_questions(QuestionSource("math", str(tmp_path / "MATH" / "train"), levels=(3, 4, 5)))
    assert [q.answer for q in got] == ["\\sqrt{2}", "\\frac{5}{6}"]


def test_gsm8k_and_generic_jsonl(tmp_path):
    gsm = load_questions(f"gsm8k:{write_jsonl(tmp_path / 'gsm.jsonl', GSM8K_ROWS)}")
    assert [q.answer for q in gsm] == ["10", "1500"] and gsm[0].level is None
    assert gsm[0].question.startswith("Weng earns")
    generic = write_jsonl(tmp_path / "qs.jsonl", [{"question": "2+2?", "answer": 4, "level": 1},
                                                  {"question": "3+3?", "answer": "6"}])
    assert load_questions_spec(str(generic)) == [Question("2+2?", "4", f"{generic}:1", 1),
                                                 Question("3+3?", "6", f"{generic}:2", None)]


def test_spec_strings_round_trip():
    source = QuestionSource.parse("math:/data/MATH?levels=3-5&split=train")
    assert source == QuestionSource("math", "/data/MATH", (3, 4, 5), "train")
    assert QuestionSource.parse(str(source)) == source
    assert QuestionSource.parse("outputs/data/rl_train.jsonl") == QuestionSource("jsonl", "outputs/data/rl_train.jsonl")
    assert parse_levels("1,3-4, 6") == (1, 3, 4, 6)
    with pytest.raises(ValueError, match="unknown option"):
        QuestionSource.parse("math:/x?level=3")
    with pytest.raises(ValueError, match="bad level list"):
        QuestionSource.parse("math:/x?levels=three")
    with pytest.raises(ValueError, match=r"unknown question set kind 'aime'; valid kinds: \['gsm8k', 'jsonl', 'math'\]"):
        QuestionSource("aime", "/x")


def test_bad_question_files_name_file_line_and_fields(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="question set .*missing.jsonl' does not exist"):
        load_questions(str(tmp_path / "missing.jsonl"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for typo in ("data/trian.jsonl", "data/math_12k", "elsewhere/train.jsonl"):  # relative typos: not Hub names
        with pytest.raises(FileNotFoundError, match=f"question set '{typo}' does not exist"):
            load_questions(typo)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok", "answer": "1"}\n{"question": "broken"\n')
    with pytest.raises(ValueError, match=rf"{bad}:2: malformed JSON"):
        load_questions(str(bad))
    math_as_generic = write_jsonl(tmp_path / "m.jsonl", MATH_ROWS[:1])
    with pytest.raises(ValueError, match=rf"{math_as_generic}:1: jsonl record needs a non-empty string field 'question' "
                                         r"\(fields: \['level', 'problem', 'solution', 'type'\]\); kinds: math needs"):
        load_questions(str(math_as_generic))
    with pytest.raises(ValueError, match="no questions left"):
        load_questions(f"math:{math_as_generic}?levels=5")


def test_cli_lists_corpora_and_counts_questions(tmp_path, capsys):
    from data_prep.__main__ import main

    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    assert main(["questions", f"math:{path}?levels=3-5", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 questions; per level: {3: 1, 4: 1, 5: 1}" in out and "answer '\\\\sqrt{2}'" in out
    assert main(["corpora"]) == 0
    assert "numinamath-1.5" in capsys.readouterr().out
    assert main(["questions", str(tmp_path / "nope.jsonl")]) == 2
    assert "does not exist" in capsys.readouterr().err
