"""The Dr. GRPO loop end to end on CPU: metrics, exact resume after kill -9 and after SIGTERM, bad configs."""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from tiny_models import addition_questions, save_warm_addition_model
from wandb_records import offline_runs



@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    model = save_warm_addition_model(root / "model")
    questions = root / "train.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in addition_questions(48, seed=1)))
    return model, questions


def _config(policy, out: Path, **overrides) -> Path:
    model, questions = policy
    cfg = dict(model_dir=str(model), output_dir=str(out), train_questions=str(questions),
               test_questions=str(questions), eval_max_questions=8, template="none", engine="torch",
               questions_per_step=4, group_size=4, max_new_tokens=12, steps=6, eval_every=3,
               checkpoint_every=2, micro_batch_size=4, minibatches_per_step=1, lr=3e-4, seed=3, log_generations=-1)
    cfg.update(overrides)
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    return path


def _launch(config: Path, nproc: int = 2) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(nproc), "-m", "pipeline.rl", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: int = 400) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time")} for r in rows]


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, step: int, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    latest = out / "checkpoints" / "latest_checkpointed_iteration.txt"
    while time.time() < deadline:
        if latest.exists() and int(latest.read_text()) >= step:
            return
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint at step {step} within {timeout}s")


def _signal_workers(proc: subprocess.Popen, sig: int) -> None:
    """Signal the training processes (as SLURM's --signal does), not torchrun's agent. They are frozen (SIGSTOP)
    while the signal is delivered, so a loaded machine cannot let them run on to the end meanwhile."""
    import psutil

    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "pipeline.rl" in p.cmdline() and "--config" in p.cmdline()]
    assert workers, "no training processes found"
    for w in workers:
        w.suspend()
    for w in workers:
        w.send_signal(sig)
    for w in workers:
        w.resume()


WANDB_OFFLINE = {"project": "r1zero-tests", "mode": "offline"}  # W&B as users turn it on, without a network


@pytest.fixture(scope="module")
def uninterrupted(policy, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "uninterrupted"
    _finish(_launch(_config(policy, out, wandb=WANDB_OFFLINE)))
    return out


@pytest.mark.multirank
def test_run_writes_every_metric_and_the_final_model(uninterrupted):
    rows = _metrics(uninterrupted)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    step = rows[1]
    for key in ("rollout/reward_mean", "rollout/accuracy", "rollout/response_len_mean", "rollout/truncation_rate",
                "rollout/question_reward_std_mean", "rollout/zero_std_question_frac", "rollout/grading_failures",
                "rollout/no_answer_rate", "train/loss", "train/entropy", "train/clip_frac", "train/logp_mismatch", "train/grad_norm"):
        assert key in step, key
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[3] and "eval/accuracy" in rows[6]
    rewards = [r["rollout/reward_mean"] for r in rows[1:]]
    assert 0 < sum(rewards) / len(rewards) < 1  # a warm policy: some right, some wrong
    assert all(r["train/logp_mismatch"] < 1e-4 for r in rows[1:])  # engine and learner agree after each sync
    assert all(r["train/grad_norm"] > 0 for r in rows[1:] if 0 < r["rollout/zero_std_question_frac"] < 1)
    assert (uninterrupted / "hf" / "config.json").exists() and (uninterrupted / "DONE").exists()
    generations = [json.loads(line) for line in (uninterrupted / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 6 * 16
    assert {"step", "question_id", "question", "gold", "response", "reward", "num_tokens", "truncated"} <= set(generations[0])


@pytest.mark.multirank
def test_every_metric_reaches_weights_and_biases(uninterrupted):
    run, = offline_runs(uninterrupted)
    assert run["id"] == (uninterrupted / "wandb_run_id").read_text().strip()
    assert (run["project"], run["name"]) == ("r1zero-tests", "uninterrupted")
    assert run["config"]["group_size"] == 4 and run["config"]["algorithm"] == "dr_grpo"  # the run's settings
    rows = _metrics(uninterrupted)
    assert [h["_step"] for h in run["history"]] == [r["step"] for r in rows]
    for logged, row in zip(run["history"], rows):  # metrics.jsonl writes a NaN (no correct answer) as null
        expected = {k: float("nan") if v is None else v for k, v in row.items() if k != "step"}
        assert {k: logged[k] for k in expected} == pytest.approx(expected, nan_ok=True)


@pytest.mark.multirank
def test_kill9_then_resume_gives_identical_metrics(policy, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    config = _config(policy, out, wandb=WANDB_OFFLINE)
    proc = _launch(config)
    _wait_for_checkpoint(out, proc, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = int((out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text())
    assert killed_at < 6 and not (out / "DONE").exists()  # really mid-run
    _finish(_launch(config))
    assert _metrics(out) == _metrics(uninterrupted)
    # the resumed process logs to the same W&B run (offline: the same or a second directory), from the checkpoint on
    runs = offline_runs(out)
    assert {run["id"] for run in runs} == {(out / "wandb_run_id").read_text().strip()}
    steps = [h["_step"] for run in runs for h in run["history"]]
    assert set(steps) == set(range(7)) and steps[-(6 - killed_at):] == list(range(killed_at + 1, 7)), steps


@pytest.mark.multirank
def test_sigterm_saves_a_checkpoint_and_exits_zero(policy, uninterrupted, tmp_path):
    out = tmp_path / "terminated"
    config = _config(policy, out, checkpoint_every=100)
    proc = _launch(config)
    deadline = time.time() + 300
    # the first step logged (after the step-0 evaluation): 5 steps remain, and the ranks are frozen when signalled
    while not (out / "metrics.jsonl").exists() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    _signal_workers(proc, signal.SIGTERM)
    output = _finish(proc)
    assert "exit requested" in output
    saved = int((out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text())
    assert 1 <= saved < 6 and not (out / "DONE").exists()
    _finish(_launch(config))
    assert _metrics(out) == _metrics(uninterrupted)


@pytest.mark.multirank
def test_finished_run_is_not_repeated(policy, uninterrupted):
    before = (uninterrupted / "metrics.jsonl").read_text()
    _finish(_launch(_config(policy, uninterrupted), nproc=1))
    assert (uninterrupted / "metrics.jsonl").read_text() == before


@pytest.mark.multirank
def test_more_steps_continue_a_finished_run(policy, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "continued"
    shutil.copytree(uninterrupted, out)
    log = _finish(_launch(_config(policy, out, steps=8)))
    assert "already finished" not in log
    rows = _metrics(out)
    assert [r["step"] for r in rows] == list(range(9)) and rows[:7] == _metrics(uninterrupted)
    assert (out / "DONE").read_text().split()[0] == "8"
    assert "already finished (6 steps): nothing to do" in _finish(_launch(_config(policy, uninterrupted), nproc=1))


@pytest.mark.multirank
def test_a_damaged_newest_checkpoint_is_refused_and_the_previous_one_resumes(policy, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(uninterrupted, out)
    (out / "DONE").unlink()  # stopped after its last checkpoint, before the export
    shutil.rmtree(out / "hf")
    newest, previous = out / "checkpoints" / "iter_0000006", out / "checkpoints" / "iter_0000004"
    shard = max((newest / "model").glob("*.distcp"), key=lambda p: p.stat().st_size)
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    proc = _launch(_config(policy, out), nproc=1)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, log[-3000:]
    assert (f"error: checkpoint {newest} is damaged: model/{shard.name} has {shard.stat().st_size} bytes" in log
            and f"use the previous good one with resume_from={previous}" in log), log[-3000:]
    assert not (out / "DONE").exists()  # never silently started over
    log = _finish(_launch(_config(policy, out, resume_from=str(previous))))
    assert f"[rl] resuming from the checkpoint of step 4: {previous}" in log
    assert _metrics(out) == _metrics(uninterrupted)


@pytest.mark.multirank
def test_resuming_with_changed_settings_is_refused_naming_them(policy, uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "changed"
    shutil.copytree(uninterrupted, out)
    proc = _launch(_config(policy, out, steps=8, lr=1e-3, group_size=8, eval_every=4), nproc=1)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert f"error: {out} holds a run with other settings (group_size: 4 -> 8; lr: 0.0003 -> 0.001)" in log, log[-3000:]
    assert (out / "DONE").read_text().split()[0] == "6"  # (torchrun adds its own traceback of the failed rank)


@pytest.mark.multirank
@pytest.mark.parametrize("override,message", [
    ({"questions_per_step": 3, "micro_batch_size": 2}, "must be divisible by the number of ranks"),
    ({"aggregation": "mean"}, "aggregation='mean'; valid"),
    ({"model_dir": "/nonexistent"}, "is not a Hugging Face model directory"),
])
def test_bad_config_fails_before_launching(policy, tmp_path, override, message):
    proc = _launch(_config(policy, tmp_path / "bad", **override), nproc=2)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert message in out
    assert not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.parametrize("override,message", [
    ({"group_size": 1}, "group_size=1 must be >= 2 (a group of one sample has zero advantage"),
    ({"steps": -5}, "steps=-5 must be >= 1"),
    ({"micro_batch_size": 0}, "micro_batch_size=0 must be >= 1"),
    ({"checkpoint_every": 0}, "checkpoint_every=0 must be >= 1"),
    ({"lr": "abc"}, "lr='abc' must be a number"),
    ({"steps": 2.5}, "steps=2.5 must be a whole number"),
    ({"eval_every": -1}, "eval_every=-1 must be >= 0"),
    ({"wandb": {"project": "p", "mode": "cloud"}}, "wandb.mode='cloud'; valid: online, offline"),
    ({"wandb": {"project": 5}}, "wandb.project=5 must be a string"),
])
def test_out_of_range_or_mistyped_settings_are_refused_naming_the_field(override, message):
    from pipeline.rl.config import RLConfig

    with pytest.raises(ValueError, match=re.escape(message)):  # a type when it is read, a range by validate
        RLConfig.from_dict({"train_questions": "q.jsonl", "template": "none", "questions_per_step": 8, "group_size": 4,
                            "micro_batch_size": 4, "minibatches_per_step": 1, **override}).validate(2, check_files=False)


def test_unknown_field_is_named():
    from pipeline.rl.config import RLConfig

    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['learning_rate'\]"):
        RLConfig.from_dict({"learning_rate": 1.0})
    with pytest.raises(ValueError, match=r"\['stpes'\] \(did you mean 'steps'\?\)"):  # the closest valid name
        RLConfig.from_dict({"stpes": 3})
    with pytest.raises(ValueError, match=r"renamed fields: generator is now engine"):
        RLConfig.from_dict({"generator": "torch"})
    with pytest.raises(ValueError, match=r"\['wandb.projet'\] \(did you mean 'project'\?\)"):
        RLConfig.from_dict({"wandb": {"projet": "math-rl"}})


@pytest.mark.multirank
@pytest.mark.parametrize("tp", [1, 2])
def test_updates_move_logprobs_in_the_direction_of_the_advantage(policy, tmp_path, tp):
    from conftest import read_rank_results, run_torchrun

    run_torchrun(Path(__file__).parent / "dist" / "learner_direction_worker.py", tp, policy[0], tmp_path, tp)
    for r in read_rank_results(tmp_path, tp):
        assert all(d * a > 0 for d, a in zip(r["delta"], r["adv"])), r
        assert r["metrics"]["train/grad_norm"] > 0


@pytest.mark.multirank
def test_in_training_eval_is_what_the_eval_suite_reports(policy, tmp_path):
    """eval/accuracy of the final step equals `pipeline.eval run` on the exported model with the same questions,
    budget, template, decoder (the torch engine, greedy) and verifier; truncated responses are graded in both."""
    model, questions = policy
    out = tmp_path / "run"
    # eval_every=0: only after the last step (it was a ZeroDivisionError after the first step's rollout and update)
    config = _config(policy, out, steps=1, eval_every=0, eval_max_questions=24, max_new_tokens=10, verifier="lenient")
    _finish(_launch(config, nproc=1))
    final = _metrics(out)[-1]
    assert 0 < final["eval/truncation_rate"]  # 10 tokens cut some answers after their box: their grading matters
    subset = tmp_path / "eval_questions.jsonl"
    subset.write_text("".join(questions.read_text().splitlines(keepends=True)[:24]))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "pipeline.eval", "run", "--model", str(out / "hf"), "--template", "none",
                           "--backend", "torch", "--benchmark", f"synthetic={subset}", "--max-new-tokens", "10",
                           "--verifier", "lenient", "--out", str(tmp_path / "eval")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["benchmarks"]["synthetic"]["accuracy"] == pytest.approx(final["eval/accuracy"])


def test_the_stage_two_cli_names_a_missing_or_broken_config_file(tmp_path, capsys):
    from pipeline.rl.__main__ import main

    broken = tmp_path / "rl.json"
    broken.write_text('{"steps": ')
    assert main(["--config", str(tmp_path / "nope.json")]) == 2
    assert main(["--config", str(broken)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: config file {tmp_path / 'nope.json'} does not exist",
                   f"error: config file {broken} line 1 column 11 is not valid JSON: Expecting value"]
    broken_yaml = tmp_path / "rl.yaml"
    broken_yaml.write_text("steps: 3\ngroup_size: [4\n")
    assert main(["--config", str(broken_yaml)]) == 2
    assert capsys.readouterr().err.startswith(f"error: config file {broken_yaml} line 3 is not valid YAML")
    good_yaml = tmp_path / "good.yaml"
    good_yaml.write_text("steps: 3\nstd_normalize: false\nwandb:\n  project: math-rl\n")
    from pipeline.rl.__main__ import parse_config

    cfg = parse_config(["--config", str(good_yaml), "group_size=4", "wandb.mode=offline"])
    assert (cfg.steps, cfg.std_normalize, cfg.group_size, cfg.wandb.project, cfg.wandb.mode) == (
        3, False, 4, "math-rl", "offline")


def test_over_long_questions_are_counted_and_all_too_long_is_refused(tmp_path, capsys):
    from transformers import AutoTokenizer

    from pipeline.rl.controller import _load_prompts
    from tiny_models import save_char_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(save_char_tokenizer(tmp_path / "tok"))
    questions = tmp_path / "q.jsonl"
    rows = [{"question": "1+1", "answer": "2"}, {"question": "9" * 40, "answer": "9"}, {"question": "2+2", "answer": "4"}]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = _load_prompts(str(questions), (), "Q: {}", tokenizer, max_prompt_tokens=10)
    assert [p["answer"] for p in prompts] == ["2", "4"]
    assert "1 of 3 questions are longer than max_prompt_tokens=10 once templated and are left out" in capsys.readouterr().out
    with pytest.raises(ValueError, match=r"all 3 are longer than max_prompt_tokens=2 once templated; raise max_prompt"):
        _load_prompts(str(questions), (), "Q: {}", tokenizer, max_prompt_tokens=2)


@pytest.mark.parametrize("field,value", [("system_prompt", 5), ("resume_from", ["iter_0000004"])])
def test_a_non_string_where_a_string_is_due_is_named(field, value):
    from pipeline.rl.config import RLConfig

    with pytest.raises(ValueError, match=rf"^{field}={value!r} must be a string$".replace("[", r"\[").replace("]", r"\]")):
        RLConfig(train_questions="q.jsonl", template="chat", **{field: value}).validate(1, check_files=False)
