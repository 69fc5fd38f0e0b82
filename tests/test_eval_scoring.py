"""pass@k against hand values and brute force; the accuracy table of a small suite against a hand count, graded
by the project's real reward (pipeline.rl.reward)."""

import dataclasses
import itertools
import json
from math import comb

import pytest

from pipeline.eval.evaluate import EvalConfig, evaluate
from pipeline.eval.generation import Completion
from pipeline.eval.scoring import pass_at_k, per_response, results_markdown, summarize


@pytest.fixture(scope="module")
def grade():
    from pipeline.rl.reward import RewardGrader

    with RewardGrader(num_workers=1) as grader:
        yield lambda responses, golds, template: grader.grade_batch(list(responses), list(golds), template)[0]


def test_pass_at_k_hand_values_and_brute_force():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))  # 0.7
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 2, 4) == 1.0 and pass_at_k(5, 0, 3) == 0.0 and pass_at_k(4, 4, 1) == 1.0
    for n, c, k in [(6, 1, 2), (7, 3, 3), (8, 2, 5), (4, 1, 4)]:
        samples = [1] * c + [0] * (n - c)  # share of k-subsets holding at least one correct sample
        subsets = list(itertools.combinations(range(n), k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(samples[i] for i in s) for s in subsets) / len(subsets))
    assert pass_at_k(200, 10, 100) == pytest.approx(1 - comb(190, 100) / comb(200, 100))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


SCRIPT = {  # question -> (responses of the generate function, in sample order)
    "What is 3 + 4?": ["so \\boxed{7}", "\\boxed{8}"],
    "What is half of 1?": ["\\boxed{0.5}", "it is \\boxed{\\frac{1}{2}}"],  # graded equal to gold 1/2
    "What is 2 * 5?": ["ten", "\\boxed{11}"],  # first gives no boxed answer
    "What is 9 - 9?": ["\\boxed{0", "\\boxed{0}"],  # first: unclosed box (no answer); second truncated below
}


def scripted_generate(prompts, *, n, temperature, top_p, max_new_tokens, stop, seed):
    """A GenerateFn with fixed responses, so the expected numbers can be counted by hand."""
    out = []
    for prompt in prompts:
        question = next(q for q in SCRIPT if q in prompt)
        out.append([Completion(text, num_tokens=10 * (i + 1) + len(question), truncated=(question == "What is 9 - 9?" and i == 1))
                    for i, text in enumerate(SCRIPT[question][:n])])
    return out


@pytest.mark.workers
def test_accuracy_table_equals_hand_count(tmp_path, grade):
    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"question": "What is 3 + 4?", "answer": "7"}) + "\n"
                 + json.dumps({"question": "What is half of 1?", "answer": "\\frac{1}{2}"}) + "\n")
    b = tmp_path / "b.jsonl"
    b.write_text(json.dumps({"question": "What is 2 * 5?", "answer": "10"}) + "\n"
                 + json.dumps({"question": "What is 9 - 9?", "answer": "0"}) + "\n")
    cfg = EvalConfig(benchmarks=(f"synthetic={a}", f"generic={b}"), template="none", temperature=1.0, n=2,
                     pass_k=(1, 2), output_dir=str(tmp_path / "out"), chunk_size=1)
    results = evaluate(cfg, scripted_generate, grade=grade, progress=False)
    syn, gen = results["benchmarks"]["synthetic"], results["benchmarks"]["generic"]
    # synthetic: q1 1/2 correct, q2 2/2 correct -> 3/4; pass@1 = mean(0.5, 1) ; pass@2 = mean(1, 1)
    assert syn["accuracy"] == pytest.approx(0.75) and syn["pass@k"] == pytest.approx({"1": 0.75, "2": 1.0})
    # generic: q3 0/2, q4: truncated "\boxed{0}" is still graded (authors' evaluation) -> 1/4
    assert gen["accuracy"] == pytest.approx(0.25) and gen["pass@k"] == pytest.approx({"1": 0.25, "2": 0.5})
    assert gen["answer_rate"] == pytest.approx(0.5) and syn["answer_rate"] == 1.0
    assert gen["truncation_rate"] == pytest.approx(0.25) and syn["truncation_rate"] == 0.0
    assert syn["response_len_mean"] == pytest.approx((24 + 34 + 28 + 38) / 4)
    assert syn["response_len_correct"] == pytest.approx((24 + 28 + 38) / 3) and syn["response_len_incorrect"] == 34
    assert results["average"]["accuracy"] == pytest.approx(0.5)
    assert results["average"]["pass@k"] == pytest.approx({"1": 0.5, "2": 0.75})
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| synthetic | 2 | 75.0 | 75.0 | 100.0 |" in table and "| average |  | 50.0 | 50.0 | 75.0 |" in table
    assert table.endswith(results_markdown(results))
    records = [json.loads(line) for line in (tmp_path / "out" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 8 and set(records[0]) == {"benchmark", "question_id", "sample_index", "question", "gold",
                                                      "response", "reward", "num_tokens", "truncated", "template"}
    assert sum(r["reward"] for r in records) == 4
    assert json.loads((tmp_path / "out" / "results.json").read_text())["benchmarks"]["generic"] == gen

    strict = evaluate(dataclasses.replace(cfg, truncated_scores_zero=True, output_dir=str(tmp_path / "s")),
                      scripted_generate, grade=grade, progress=False)
    assert strict["benchmarks"]["generic"]["accuracy"] == 0.0


def test_per_response_adapter_takes_math_reward_shaped_functions(tmp_path):
    exact = per_response(lambda response, gold, template: float(response.strip() == gold))
    records = [{"question_id": 0, "reward": r, "num_tokens": 3, "truncated": False, "template": "none",
                "response": "x"} for r in exact(["4", "5"], ["4", "4"], "none")]
    assert summarize(records)["accuracy"] == 0.5


def test_bad_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="greedy decoding"):
        EvalConfig(benchmarks=("math500=x.jsonl",), n=4)
    with pytest.raises(ValueError, match="pass_k values"):
        EvalConfig(benchmarks=("math500=x.jsonl",), n=2, temperature=1.0, pass_k=(1, 4))
    with pytest.raises(ValueError, match="no benchmarks"):
        EvalConfig()
    with pytest.raises(ValueError, match="unknown prompt template"):
        EvalConfig(benchmarks=("math500=x.jsonl",), template="chatml")
    mapping = tmp_path / "benchmarks.json"
    mapping.write_text(json.dumps({"math500": "/data/math500.jsonl", "amc": "/data/amc"}))
    refs = EvalConfig(benchmark_file=str(mapping), benchmarks=("aime24=/data/aime.parquet",)).refs()
    assert [(r.name, str(r.path)) for r in refs] == [("aime24", "/data/aime.parquet"), ("math500", "/data/math500.jsonl"),
                                                    ("amc", "/data/amc")]
    mapping.write_text(json.dumps({"math501": "/data/x.jsonl"}))
    with pytest.raises(ValueError, match="unknown benchmark 'math501'"):
        EvalConfig(benchmark_file=str(mapping))
    with pytest.raises(ValueError, match="names repeat"):
        EvalConfig(benchmarks=("amc=/a.jsonl", "amc=/b.jsonl"))
    with pytest.raises(ValueError, match="x.jsonl does not exist"):  # the file is checked before generation
        evaluate(EvalConfig(benchmarks=(f"math500={tmp_path / 'x.jsonl'}",)), scripted_generate, progress=False)


@pytest.mark.workers
def test_template_study_counts_answers_with_each_templates_extractor(tmp_path, grade):
    from pipeline.eval.evaluate import template_study

    a = tmp_path / "a.jsonl"
    a.write_text(json.dumps({"question": "What is 3 + 4?", "answer": "7"}) + "\n"
                 + json.dumps({"question": "What is 2 * 5?", "answer": "10"}) + "\n")
    cfg = EvalConfig(benchmarks=(f"synthetic={a}",), output_dir=str(tmp_path / "study"))
    got = template_study(cfg, ("r1", "none"), scripted_generate, grade=grade, progress=False)
    # greedy n=1 gives the first scripted response: "so \boxed{7}" (right), "ten" (no answer)
    assert got["none"]["benchmarks"]["synthetic"]["answer_rate"] == 0.5 and got["none"]["average"]["accuracy"] == 0.5
    assert got["r1"]["benchmarks"]["synthetic"]["answer_rate"] == 0.0 and got["r1"]["average"]["accuracy"] == 0.0
    table = (tmp_path / "study" / "templates.md").read_text()
    assert "| r1 | 0.0 / 0.0 | 0.0 / 0.0 |" in table and "| none | 50.0 / 50.0 | 50.0 / 50.0 |" in table
    assert (tmp_path / "study" / "r1" / "results.json").exists()
    for metric in ("answer_rate", "accuracy"):
        assert (tmp_path / "study" / f"templates_{metric}.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="unknown templates"):
        template_study(cfg, ("r2",), scripted_generate, grade=grade)


@pytest.mark.workers
def test_verifier_setting_flows_into_grading_and_results(tmp_path):
    """``verifier`` (CLI ``--verifier``) picks the grader and is recorded; the default is math_verify, the grader of
    the authors' evaluate_model.py."""
    from pipeline.eval.__main__ import _config, build_parser, main

    bench = tmp_path / "a.jsonl"
    bench.write_text(json.dumps({"question": "What is half of 1?", "answer": "\\frac{1}{2}"}) + "\n")

    def generate(prompts, *, n, temperature, top_p, max_new_tokens, stop, seed):
        # an unreduced fraction: of the three verifiers only "fast" refuses it
        return [[Completion("so \\boxed{2/4}", num_tokens=5, truncated=False)] for _ in prompts]

    accuracy = {}
    for verifier in ("fast", "math_verify", "lenient"):
        cfg = EvalConfig(benchmarks=(f"synthetic={bench}",), verifier=verifier, grader_workers=1,
                         output_dir=str(tmp_path / verifier))
        results = evaluate(cfg, generate, progress=False)  # the real RewardGrader, built from the config
        accuracy[verifier] = results["average"]["accuracy"]
        written = json.loads((tmp_path / verifier / "results.json").read_text())
        assert written["verifier"] == written["config"]["verifier"] == verifier
        assert f"{verifier} verifier" in (tmp_path / verifier / "results.md").read_text()
    assert accuracy == {"fast": 0.0, "math_verify": 1.0, "lenient": 1.0}

    default = next(f.default for f in dataclasses.fields(EvalConfig) if f.name == "verifier")
    assert default == "math_verify"
    args = build_parser().parse_args(["run", "--benchmark", f"synthetic={bench}", "--verifier", "fast"])
    assert _config(args).verifier == "fast"
    with pytest.raises(ValueError, match=r"unknown verifier 'strict'; valid names: \['fast', 'lenient', 'math_ver"):
        EvalConfig(benchmarks=(f"synthetic={bench}",), verifier="strict")
    assert main(["run", "--benchmark", f"synthetic={bench}", "--verifier", "strict"]) == 2


def test_answer_rate_follows_the_verifier_reading():
    record = {"template": "qwen_math", "response": "so \\fbox{7}"}
    from pipeline.eval.scoring import answered

    assert answered(record) and answered(record, "lenient")  # the template's extractor reads \fbox
    assert not answered(record, "fast") and not answered(record, "math_verify")  # the authors' need \boxed{...}


@pytest.mark.cli
def test_template_study_command_runs_on_a_tiny_model(tmp_path):
    """`python -m pipeline.eval templates` end to end: a real (tiny) model decoded by the torch engine under the r1,
    qwen_math and none templates, graded by the default verifier; the table, JSON and plots are written."""
    import subprocess
    import sys

    from conftest import REPO
    from tiny_models import addition_questions, save_warm_addition_model

    model = save_warm_addition_model(tmp_path / "model")
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in addition_questions(12, seed=2)))
    proc = subprocess.run([sys.executable, "-m", "pipeline.eval", "templates", "--model", str(model), "--backend",
                           "torch", "--benchmark", f"synthetic={questions}", "--max-new-tokens", "16", "--out",
                           str(tmp_path / "study")], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = json.loads((tmp_path / "study" / "templates.json").read_text())
    assert sorted(study) == ["none", "qwen_math", "r1"]
    # the warm model was tuned on bare questions: it boxes its answers without a template, not inside r1's tags
    assert study["none"]["average"]["answer_rate"] > 0.5 and study["r1"]["average"]["answer_rate"] < 0.5
    assert "| none |" in proc.stdout and (tmp_path / "study" / "templates_accuracy.png").exists()
