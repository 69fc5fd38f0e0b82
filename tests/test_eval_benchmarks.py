"""Benchmark loaders: every file format, each benchmark's field names, and errors that name the file / line."""

import json

import pytest

from pipeline.eval.benchmarks import BENCHMARKS, BenchmarkError, load_benchmark, parse_benchmark, suite_refs


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_jsonl_json_and_parquet_give_the_same_questions(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"problem": "1+1?", "answer": "2", "level": 1}, {"problem": "2+3?", "answer": "5", "level": 2}]
    write_jsonl(tmp_path / "m.jsonl", records)
    (tmp_path / "m.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "m.parquet")
    loaded = [load_benchmark(f"math500={tmp_path / name}") for name in ("m.jsonl", "m.json", "m.parquet")]
    assert loaded[0] == loaded[1] == loaded[2]
    assert [(q.question_id, q.question, q.answer) for q in loaded[0]] == [(0, "1+1?", "2"), (1, "2+3?", "5")]
    assert loaded[2][1].extra == {"level": 2}
    assert len(load_benchmark(f"math500:{tmp_path / 'm.jsonl'}", max_questions=1)) == 1


def test_save_to_disk_dataset_and_authors_suite(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list([{"problem": "p", "answer": "3"}]).save_to_disk(tmp_path / "single")
    assert load_benchmark(f"amc={tmp_path / 'single'}")[0].answer == "3"
    suite = DatasetDict({  # the authors' evaluation_suite layout: one split per benchmark
        "aime": Dataset.from_list([{"problem": "aime q", "answer": "204"}]),
        "amc": Dataset.from_list([{"problem": "amc q", "answer": "142.0"}, {"problem": "amc q2", "answer": "7"}]),
        "math": Dataset.from_list([{"problem": "math q", "answer": "\\frac{1}{2}"}]),
        "minerva": Dataset.from_list([{"problem": "minerva q", "answer": "0.3"}]),
        "olympiad_bench": Dataset.from_list([{"problem": "ob q", "answer": "$x=1$"}]),
    })
    suite.save_to_disk(tmp_path / "suite")
    got = {ref.name: load_benchmark(ref) for ref in suite_refs(tmp_path / "suite")}
    assert [q.question for q in got["aime24"]] == ["aime q"]
    assert [q.question for q in got["amc"]] == ["amc q", "amc q2"]
    assert got["math500"][0].answer == "\\frac{1}{2}"
    assert got["minerva"][0].question == "minerva q"
    assert got["olympiadbench"][0].answer == "x=1"  # surrounding $ dropped


def test_each_benchmark_reads_its_published_field_names(tmp_path):
    cases = {
        "aime24": ({"Problem": "Find N.", "Answer": 204, "Solution": "long"}, "Find N.", "204"),
        "amc": ({"id": 0, "problem": "How many?", "answer": 142.0, "url": "u"}, "How many?", "142"),
        "math500": ({"problem": "Compute.", "solution": "so \\boxed{9}", "answer": "\\frac{3}{4}", "level": 5},
                    "Compute.", "\\frac{3}{4}"),
        "minerva": ({"question": "Mass?", "answer": "6.6e-27"}, "Mass?", "6.6e-27"),
        "olympiadbench": ({"question": "Solve.", "final_answer": ["$\\sqrt{2}$", "$3$"], "id": 7},
                          "Solve.", "\\sqrt{2}, 3"),
        "synthetic": ({"question": "What is 2 + 2?", "answer": "4", "level": 1}, "What is 2 + 2?", "4"),
    }
    for name, (record, question, answer) in cases.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", [record])
        [q] = load_benchmark(f"{name}={path}")
        assert (q.question, q.answer) == (question, answer), name
    minerva_solution = write_jsonl(tmp_path / "minerva2.jsonl", [{"problem": "Speed?", "solution": "thus $\\boxed{3 \\times 10^8}$."}])
    assert load_benchmark(f"minerva={minerva_solution}")[0].answer == "3 \\times 10^8"
    assert load_benchmark(f"math500={tmp_path / 'math500.jsonl'}")[0].extra["level"] == 5


def test_synthetic_directory_reads_rl_test_jsonl(tmp_path):
    write_jsonl(tmp_path / "rl_test.jsonl", [{"question": "q", "answer": "1", "level": 3}])
    assert load_benchmark(f"synthetic:{tmp_path}")[0].extra == {"level": 3}


def test_missing_and_malformed_files_name_the_file_and_line(tmp_path):
    with pytest.raises(BenchmarkError, match="nope.jsonl does not exist"):
        load_benchmark(f"math500={tmp_path / 'nope.jsonl'}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": "1"}\n\n{"problem": "b", "answer": \n')
    with pytest.raises(BenchmarkError, match=r"bad\.jsonl, line 3: not valid JSON"):
        load_benchmark(f"math500={bad}")
    no_answer = write_jsonl(tmp_path / "na.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": None}])
    with pytest.raises(BenchmarkError, match=r"na\.jsonl, line 2: field 'answer'"):
        load_benchmark(f"math500={no_answer}")
    wrong_fields = write_jsonl(tmp_path / "wf.jsonl", [{"prompt": "a", "target": "1"}])
    with pytest.raises(BenchmarkError, match=r"wf\.jsonl has fields \['prompt', 'target'\]"):
        load_benchmark(f"olympiadbench={wrong_fields}")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(BenchmarkError, match="broken.parquet: not a readable parquet"):
        load_benchmark(f"amc={tmp_path / 'broken.parquet'}")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BenchmarkError, match="empty.jsonl holds no records"):
        load_benchmark(f"amc={tmp_path / 'empty.jsonl'}")
    (tmp_path / "notadataset").mkdir()
    with pytest.raises(BenchmarkError, match="notadataset is not a save_to_disk directory"):
        load_benchmark(f"aime24={tmp_path / 'notadataset'}")


def test_names_are_checked_against_the_registry():
    assert parse_benchmark("MATH500=/x.jsonl").name == "math500"
    with pytest.raises(ValueError, match="unknown benchmark 'gsm9k'.*valid names"):
        parse_benchmark("gsm9k=/x.jsonl")
    with pytest.raises(ValueError, match="is not NAME=PATH"):
        parse_benchmark("/just/a/path.jsonl")
    assert {"aime24", "amc", "math500", "minerva", "olympiadbench", "synthetic"} <= set(BENCHMARKS)
