"""Stage one end to end on CPU (torchrun + gloo): layouts agree, kill -9 / SIGTERM resume exactly, checkpoints
reshard TP=2 -> TP=1, bad or partial checkpoints are refused, finished runs are not retrained."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from dist.pretrain_fixtures import (data_prep_corpus, finish, launch, losses, metrics, run, tiny_run_config,
                                   write_config)
from wandb_records import offline_runs

pytestmark = pytest.mark.multirank


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return data_prep_corpus(tmp_path_factory.mktemp("corpus"))


def _config(corpus, out: Path, **sections) -> Path:
    return write_config(tiny_run_config(corpus, out, **sections), out.with_suffix(".json"))


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stdout[-5000:]
    return proc.stdout


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The uninterrupted run at TP=PP=DP=1."""
    out = tmp_path_factory.mktemp("ref") / "run"
    wandb_offline = {"project": "r1zero-tests", "mode": "offline"}  # W&B as users turn it on, without a network
    _ok(run(1, _config(corpus, out, logging={"progress_bar": False, "peak_flops_per_rank": 1e9,
                                             "wandb": wandb_offline})))
    return out


def test_reference_run_trains_and_writes_the_layout(reference):
    train, val = losses(reference), losses(reference, "val/loss")
    assert len(train) == 6 and len(val) == 3  # val before the first step, at step 3 and at the end
    assert train[-1] < train[0] - 0.5 and val[-1] < val[0] - 0.5
    records = metrics(reference)
    for key in ("train/lr", "train/grad_norm", "train/tokens_per_s", "train/mfu"):
        assert all(records[s][key] > 0 for s in range(1, 7)), key
    assert records[1]["train/lr"] == pytest.approx(3e-3)  # warmup of 1 step reaches the peak at step 1
    assert records[6]["train/lr"] == pytest.approx(3e-4)  # cosine ends at min_lr
    assert (reference / "DONE").read_text().strip() == "6"
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == [
        "iter_0000004", "iter_0000006", "latest_checkpointed_iteration.txt"]  # keep_last=2
    assert list((reference / "tensorboard").iterdir())
    assert not (reference / "init_hf").exists()


def test_every_metric_reaches_weights_and_biases(reference):
    run, = offline_runs(reference)
    assert run["id"] == (reference / "wandb_run_id").read_text().strip() and run["name"] == "run"
    assert run["config"]["schedule"]["train_iters"] == 6  # the run's settings
    logged: dict[int, dict] = {}
    for record in run["history"]:
        logged.setdefault(record["_step"], {}).update(record)
    written = metrics(reference)
    assert sorted(logged) == sorted(written)
    for step, record in written.items():
        expected = {k: v for k, v in record.items() if k not in ("step", "time")}
        assert {k: logged[step][k] for k in expected} == pytest.approx(expected), step


def test_hf_export_loads_in_transformers_with_the_tokenizer(reference):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(reference / "hf")
    model = AutoModelForCausalLM.from_pretrained(reference / "hf", dtype=torch.float32)
    assert model.config.tie_word_embeddings and model.config.num_key_value_heads == 2
    assert model.config.rope_parameters["rope_type"] == "llama3"
    ids = tok("Question: What is 2 + 3?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


@pytest.fixture(scope="module")
def tp2_run(corpus, tmp_path_factory):
    """The same run at TP=2 (2 ranks), uninterrupted."""
    out = tmp_path_factory.mktemp("tp2") / "run"
    _ok(run(2, _config(corpus, out, parallel={"tp": 2, "threads_per_rank": 1})))
    return out


def test_tp2_matches_tp1(reference, tp2_run):
    assert losses(tp2_run) == pytest.approx(losses(reference), abs=2e-5)
    assert losses(tp2_run, "val/loss") == pytest.approx(losses(reference, "val/loss"), abs=2e-5)


@pytest.fixture(scope="module")
def dp2_distopt_run(corpus, tmp_path_factory):
    """DP=2 with the distributed optimizer (the GPU default when DP > 1)."""
    out = tmp_path_factory.mktemp("dp2") / "run"
    _ok(run(2, _config(corpus, out, parallel={"use_distributed_optimizer": "true", "threads_per_rank": 1})))
    return out


def test_pp2_matches_tp1(corpus, reference, tmp_path):
    out = tmp_path / "run"
    _ok(run(2, _config(corpus, out, parallel={"pp": 2, "threads_per_rank": 1})))
    assert losses(out) == pytest.approx(losses(reference), abs=2e-5)
    assert losses(out, "val/loss") == pytest.approx(losses(reference, "val/loss"), abs=2e-5)


def test_dp2_with_distributed_optimizer_matches_tp1(reference, dp2_distopt_run):
    assert losses(dp2_distopt_run) == pytest.approx(losses(reference), abs=2e-5)
    assert losses(dp2_distopt_run, "val/loss") == pytest.approx(losses(reference, "val/loss"), abs=2e-5)


def test_distributed_optimizer_checkpoint_resumes_at_another_dp(corpus, reference, dp2_distopt_run, tmp_path):
    from pipeline.pretrain_config import PretrainConfig

    saved = dp2_distopt_run / "checkpoints" / "iter_0000004"
    out = tmp_path / "run"
    text = _ok(run(1, _config(corpus, out, parallel={"use_distributed_optimizer": "true"}), "--resume-from", str(saved)))
    assert "resharded from {'tp': 1, 'pp': 1, 'dp': 2}" in text
    assert losses(out) == pytest.approx(losses(reference)[4:], abs=2e-5)
    # per-rank (dp_reshardable) optimizer state: refused before launch at another TP or without the distributed optimizer
    for parallel, message in [({"tp": 2, "use_distributed_optimizer": "true"}, "resume at that tp/pp"),
                              ({}, "set parallel.use_distributed_optimizer=true")]:
        cfg = PretrainConfig.from_dict(tiny_run_config(corpus, tmp_path / "x", parallel=parallel,
                                                       checkpoint={"resume_from": str(saved)}))
        with pytest.raises(ValueError, match=re.escape(message)):
            cfg.validate(world_size=2 if parallel else 1)


def test_tp2_checkpoint_resumes_at_tp1(corpus, reference, tp2_run, tmp_path):
    out = tmp_path / "run"
    text = _ok(run(1, _config(corpus, out), "--resume-from", str(tp2_run / "checkpoints" / "iter_0000004")))
    assert "resharded from {'tp': 2, 'pp': 1, 'dp': 1}" in text
    assert losses(out) == pytest.approx(losses(reference)[4:], abs=2e-5)  # steps 5 and 6


def test_kill_9_then_resume_is_bitwise_identical(corpus, reference, tmp_path):
    out = tmp_path / "run"
    config = _config(corpus, out, schedule={"train_iters": 6})
    proc = launch(1, config)
    killed_at = _wait_for_step(out, proc, 3)  # past the step-2 checkpoint
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "DONE").exists(), f"the run finished before it was killed (at step {killed_at})"
    newest = max((out / "checkpoints").glob("iter_???????"))
    partial = out / "checkpoints" / "iter_0000099.tmp"  # what a save killed mid-way leaves: never renamed
    shutil.copytree(newest, partial)
    (partial / "COMPLETE").unlink(missing_ok=True)
    text = _ok(run(1, config))
    assert "ignoring unfinished checkpoint write(s)" in text and "'iter_0000099.tmp'" in text
    assert "resumed from" in text
    assert losses(out) == losses(reference)  # bitwise: same layout, same data position, same optimizer state
    assert losses(out, "val/loss") == losses(reference, "val/loss")
    assert sorted(metrics(out)) == list(range(7))  # no step logged twice after the resume


def test_sigterm_checkpoints_exits_0_and_resumes_exactly(corpus, tp2_run, tmp_path):
    out = tmp_path / "run"
    config = _config(corpus, out, parallel={"tp": 2, "threads_per_rank": 1})
    proc = launch(2, config)
    _wait_for_step(out, proc, 2)
    import psutil

    workers = psutil.Process(proc.pid).children()
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGTERM)  # one rank only: the other must agree to stop at the same step
    text = _ok(finish(proc, timeout=120))
    assert "exit requested" in text
    saved = json.loads((out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text())
    assert 2 <= saved < 6 and not (out / "hf").exists() and not (out / "DONE").exists()
    _ok(run(2, config))
    assert losses(out) == losses(tp2_run)  # bitwise, at the same layout


def test_finished_run_is_not_retrained(reference):
    before = (reference / "metrics.jsonl").read_text()
    text = _ok(run(1, reference.with_suffix(".json")))
    assert "already finished" in text
    assert (reference / "metrics.jsonl").read_text() == before


@pytest.mark.parametrize("damage", ["no_marker", "no_metadata"])
def test_incomplete_checkpoint_is_refused_before_launch(corpus, reference, tmp_path, damage):
    from pipeline.pretrain_config import PretrainConfig

    bad = tmp_path / "iter_0000004"
    shutil.copytree(reference / "checkpoints" / "iter_0000004", bad)
    if damage == "no_marker":
        (bad / "COMPLETE").unlink()
        expected = "is incomplete (no COMPLETE marker"
    else:
        (bad / "model" / "metadata.json").unlink()
        expected = "is damaged: model/metadata.json is missing"
    cfg = PretrainConfig.from_dict(tiny_run_config(corpus, tmp_path / "run", checkpoint={"resume_from": str(bad)}))
    with pytest.raises(ValueError, match=re.escape(f"checkpoint {bad} {expected}")):
        cfg.validate(world_size=1)


@pytest.mark.parametrize("damage", ["truncated", "one byte changed"])
def test_corrupt_shard_is_refused_with_a_clear_error(corpus, reference, tmp_path, damage):
    bad = tmp_path / "iter_0000004"
    shutil.copytree(reference / "checkpoints" / "iter_0000004", bad)
    shard = max((bad / "model").glob("*.distcp"), key=lambda p: p.stat().st_size)
    data = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(data[: len(data) // 2])
        expected = f"is damaged: model/{shard.name} has {len(data) // 2} bytes, {len(data)} were written"
    else:
        shard.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
        expected = f"is damaged: model/{shard.name} differs from what was written (sha256)"
    out = tmp_path / "run"
    proc = run(1, _config(corpus, out), "--resume-from", str(bad))
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert f"error: checkpoint {bad} {expected}" in proc.stdout, proc.stdout[-3000:]
    assert "Traceback" not in proc.stdout and not (out / "metrics.jsonl").exists()


def _wait_for_step(out: Path, proc, step: int, timeout: float = 240) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run exited ({proc.returncode}) before step {step}:\n{proc.log.read_text()[-4000:]}")
        try:
            done = [s for s in metrics(out) if s >= step]
        except (FileNotFoundError, json.JSONDecodeError):
            done = []
        if done:
            return max(done)
        time.sleep(0.02)
    raise AssertionError(f"no step {step} within {timeout}s")
