"""The paper's diagnostics on hand-written generations: self-reflection shares and accuracy with vs without,
answering share per template, length of correct vs incorrect per step, GRPO's 1/std weighting."""

import json
import math

import pytest

from pipeline.eval import diagnostics


def rec(step, qid, response, reward, tokens, template="qwen_math"):
    return {"step": step, "question_id": qid, "question": f"q{qid}", "gold": "1", "response": response,
            "reward": reward, "num_tokens": tokens, "truncated": False, "template": template}


def test_self_reflection_shares_and_accuracy_with_vs_without():
    records = [
        rec(0, 0, "Let me RECHECK this. \\boxed{1}", 1.0, 40),
        rec(0, 0, "Wait, we should double-check and re-examine. \\boxed{2}", 0.0, 60),
        rec(0, 1, "plain \\boxed{1}", 1.0, 10),
        rec(0, 1, "plain \\boxed{3}", 0.0, 20),
        rec(1, 2, "Let's think again: \\boxed{1}", 1.0, 30),
        rec(1, 3, "Wait... aha, \\boxed{1}", 1.0, 50),  # only the extended set counts these
    ]
    stats = diagnostics.reflection_stats(records)
    assert stats["responses"] == 6 and stats["n_with"] == 3 and stats["reflection_rate"] == pytest.approx(0.5)
    assert stats["accuracy_with"] == pytest.approx(2 / 3) and stats["accuracy_without"] == pytest.approx(2 / 3)
    assert stats["len_with"] == pytest.approx((40 + 60 + 30) / 3) and stats["len_without"] == pytest.approx(80 / 3)
    assert stats["question_reflection_rate"] == pytest.approx(2 / 4)  # questions 0 and 2 of 0..3
    assert stats["keyword_counts"] == {"recheck": 1, "re-examine": 1, "double-check": 1, "think again": 1}
    extended = diagnostics.reflection_stats(records, diagnostics.keyword_set("extended"))
    assert extended["n_with"] == 4 and extended["accuracy_with"] == pytest.approx(3 / 4)
    assert extended["accuracy_without"] == pytest.approx(1 / 2)
    per_step = diagnostics.reflection_by_step(records)
    assert per_step[0]["reflection_rate"] == pytest.approx(0.5) and per_step[1]["reflection_rate"] == pytest.approx(0.5)
    assert per_step[1]["accuracy_without"] == 1.0
    assert diagnostics.AUTHORS_REFLECTION_KEYWORDS[:3] == ("recheck", "rethink", "reassess")
    assert "wait" not in diagnostics.AUTHORS_REFLECTION_KEYWORDS
    with pytest.raises(ValueError, match="valid names"):
        diagnostics.keyword_set("mine")


def test_answer_rate_per_template_uses_each_templates_extractor():
    records = [
        rec(0, 0, "reasoning </think> <answer> 7 </answer>", 1.0, 9, "r1"),
        rec(0, 1, "I think it is \\boxed{7}", 0.0, 9, "r1"),  # no answer tag: r1 finds no answer
        rec(0, 2, "so \\boxed{7}", 1.0, 9, "qwen_math"),
        rec(0, 3, "Question: what is 7? Answer: seven", 0.0, 9, "none"),
        rec(0, 4, "\\boxed{7}", 1.0, 9, "none"),
    ]
    got = diagnostics.answer_rate_by_template(records)
    assert got == {"none": {"responses": 2, "answer_rate": 0.5, "accuracy": 0.5},
                   "qwen_math": {"responses": 1, "answer_rate": 1.0, "accuracy": 1.0},
                   "r1": {"responses": 2, "answer_rate": 0.5, "accuracy": 0.5}}


def test_length_of_correct_vs_incorrect_per_step():
    records = [rec(0, 0, "", 1.0, 10), rec(0, 0, "", 0.0, 30), rec(0, 1, "", 0.0, 50),
               rec(5, 0, "", 1.0, 20), rec(5, 1, "", 1.0, 40)]
    got = diagnostics.length_by_correctness(records)
    assert got[0] == {"len_mean": 30, "len_correct": 10, "len_incorrect": 40, "n_correct": 1, "n_incorrect": 2}
    assert got[5]["len_incorrect"] is None and got[5]["len_correct"] == 30


def test_grpo_std_weighting_by_hand():
    rewards = {0: [1, 0, 0, 0], 1: [1, 1, 0, 0], 2: [1, 1, 1, 1], 3: [0, 0, 0, 0]}  # step 0, group size 4
    records = [rec(0, q, "", float(r), 5) for q, rs in rewards.items() for r in rs]
    records += [rec(1, q, "", float(r), 5) for q, rs in {0: [1, 1, 1, 0], 1: [1, 0, 1, 0]}.items() for r in rs]
    got = diagnostics.std_weighting(records)
    std_1of4, std_2of4 = math.sqrt(3 / 12), math.sqrt(4 / 12)  # unbiased std of binary rewards
    step0 = got["per_step"][0]
    assert step0["questions"] == 4 and step0["zero_std_frac"] == 0.5
    assert step0["reward_std_mean"] == pytest.approx((std_1of4 + std_2of4) / 4)
    assert step0["weight_max"] == pytest.approx(1 / std_1of4) and step0["weight_max_over_min"] == pytest.approx(std_2of4 / std_1of4)
    assert got["per_step"][1]["zero_std_frac"] == 0.0
    buckets = {(r["correct"], r["group_size"]): r for r in got["by_accuracy"]}
    assert buckets[(1, 4)]["questions"] == 1 and buckets[(2, 4)]["questions"] == 2 and buckets[(3, 4)]["questions"] == 1
    assert buckets[(1, 4)]["weight_vs_half"] == pytest.approx(std_2of4 / std_1of4)  # ~1.155: easy/hard weigh more
    assert buckets[(2, 4)]["weight_vs_half"] == pytest.approx(1.0) and buckets[(0, 4)]["weight"] is None
    assert got["partial_groups"] == 0
    partial = records + [rec(2, 0, "", 1.0, 5), rec(2, 0, "", 0.0, 5)]  # step 2: only 2 of the 4 responses logged
    assert 2 in diagnostics.std_weighting(partial)["per_step"]
    assert 2 not in diagnostics.std_weighting(partial, group_size=4)["per_step"]
    assert diagnostics.std_weighting(partial, group_size=4)["partial_groups"] == 1
    with pytest.raises(ValueError, match="log_generations=-1"):
        diagnostics.std_weighting([rec(0, 0, "", 1.0, 5), rec(0, 1, "", 0.0, 5)])
    with pytest.raises(ValueError, match="log_generations=-1"):
        diagnostics.std_weighting(records, group_size=8)


def test_read_generations_names_file_and_line(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text(json.dumps(rec(0, 0, "x", 1.0, 3)) + "\n" + '{"question_id": 1, "response": "y"}\n')
    with pytest.raises(ValueError, match=r"generations.jsonl, line 2: generation record lacks \['reward', 'num_tokens'\]"):
        diagnostics.read_generations(tmp_path)
    path.write_text("{oops\n")
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        diagnostics.read_generations(path)
    with pytest.raises(FileNotFoundError, match="no generations file"):
        diagnostics.read_generations(tmp_path / "nothing")
