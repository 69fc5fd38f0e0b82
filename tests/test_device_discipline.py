"""Device discipline without a GPU: stage one, stage two's learner and its controller with the model on a device other
than the host's (megatron_ext.simulated_accelerator), where a tensor left on the host fails as it does on CUDA and
collectives on the default group refuse host tensors as NCCL does. Each run is compared with the same run on the CPU:
same losses, metrics and weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

from megatron_ext.simulated_accelerator import SIMULATED_ACCELERATOR_ENV

pytestmark = pytest.mark.multirank

DIST = Path(__file__).parent / "dist"
SIMULATED = {SIMULATED_ACCELERATOR_ENV: "1"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_random_llama(tmp_path_factory.mktemp("device") / "hf", tiny_llama_config(num_layers=2), seed=1)


def test_the_simulated_device_refuses_what_cuda_refuses(tmp_path):
    run_torchrun(DIST / "simulated_device_worker.py", 2, tmp_path, env=SIMULATED)
    for r in read_rank_results(tmp_path, 2):
        assert r["device"] == "sim:0"
        assert "same device" in r["mixed_add"] and "same device" in r["host_indices_embedding"]
        assert r["host_index_into_device_tensor"] == [2.0, 3.0]  # allowed on CUDA too
        assert r["host_scalar"] == [3.0, 4.0]
        assert "accelerator" in r["host_all_reduce_default_group"]  # NCCL's refusal
        assert r["host_all_reduce_gloo_group"] == 3.0 and r["device_all_reduce"] == 3.0
        assert r["all_gather_object"] == [0, 1]
        assert r["grad_equal_cpu"] and r["to_host_type"] == "Tensor"


@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2)], ids=["dp2", "tp2", "pp2"])
def test_rl_update_on_a_device_equals_the_cpu_update(model_dir, tmp_path, tp, pp):
    on_device, on_cpu = tmp_path / "device", tmp_path / "cpu"
    on_device.mkdir(), on_cpu.mkdir()
    run_torchrun(DIST / "device_discipline_worker.py", 2, model_dir, on_device, tp, pp, env=SIMULATED)
    run_torchrun(DIST / "device_discipline_worker.py", 2, model_dir, on_cpu, tp, pp)
    for dev, cpu in zip(read_rank_results(on_device, 2), read_rank_results(on_cpu, 2)):
        assert dev["device"] == "sim:0" and cpu["device"] == "cpu"
        for case in ("shared_prompt_on_policy", "per_response_rows", "minibatches_ppo_kl", "engine_logprobs"):
            d, c = dev[case], cpu[case]
            assert d["params_device"] == ["sim:0"]
            for key in c["metrics"]:
                assert d["metrics"][key] == pytest.approx(c["metrics"][key], rel=1e-5, abs=1e-6), (case, key)
            assert d["param_sums"] == pytest.approx(c["param_sums"], rel=1e-5, abs=1e-4), case
            if c["logp_sum"] is not None:
                assert d["logp_sum"] == pytest.approx(c["logp_sum"], rel=1e-5), case


def _run(module: str, config: Path, *, simulated: bool, nproc: int = 2) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}:{REPO / 'tests'}", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", **(SIMULATED if simulated else {}))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                           "-m", module, "--config", str(config)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _records(out: Path) -> dict[int, dict]:
    by_step: dict[int, dict] = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step.setdefault(record["step"], {}).update(
            {k: v for k, v in record.items() if not ("time" in k or "tokens_per_s" in k or k == "train/mfu")})
    return by_step


def _assert_same_records(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for step in want:
        assert sorted(got[step]) == sorted(want[step]), step
        for key, value in want[step].items():
            if isinstance(value, float):
                assert got[step][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (step, key)
            else:
                assert got[step][key] == value, (step, key)


def _forget_last_step(out: Path, step: int) -> None:
    """What a run killed during its last step leaves: checkpoints up to step - 1, no final export."""
    import shutil

    shutil.rmtree(out / "hf")
    (out / "DONE").unlink()
    shutil.rmtree(out / "checkpoints" / f"iter_{step:07d}")
    (out / "checkpoints" / "latest_checkpointed_iteration.txt").write_text(str(step - 1))


def test_rl_run_on_a_device_equals_the_cpu_run_and_resumes(tmp_path):
    """The controller's per-step reductions, evaluation, checkpoints, resume and the HF export with the learner on
    the device (the torch engine samples on the host, as vLLM hands back host lists)."""
    from tiny_models import addition_questions, save_warm_addition_model

    model = save_warm_addition_model(tmp_path / "model")
    questions = tmp_path / "train.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in addition_questions(48, seed=1)))
    outs = {}
    for name in ("device", "cpu"):
        outs[name] = tmp_path / name
        config = dict(model_dir=str(model), output_dir=str(outs[name]), train_questions=str(questions),
                      test_questions=str(questions), eval_max_questions=8, template="none", engine="torch",
                      questions_per_step=4, group_size=4, max_new_tokens=12, steps=3, eval_every=2,
                      checkpoint_every=1, micro_batch_size=4, minibatches_per_step=2, lr=3e-4, seed=3)
        (tmp_path / f"{name}.json").write_text(json.dumps(config))
        _run("pipeline.rl", tmp_path / f"{name}.json", simulated=name == "device")
    uninterrupted = _records(outs["device"])
    _assert_same_records(uninterrupted, _records(outs["cpu"]))
    _forget_last_step(outs["device"], 3)
    (outs["device"] / "metrics.jsonl").write_text(  # the resumed run rewrites step 3 itself
        "".join(line + "\n" for line in (outs["device"] / "metrics.jsonl").read_text().splitlines()
                if json.loads(line)["step"] < 3))
    _run("pipeline.rl", tmp_path / "device.json", simulated=True)
    _assert_same_records(_records(outs["device"]), uninterrupted)
    assert (outs["device"] / "hf" / "model.safetensors").exists()


def test_pretrain_on_a_device_equals_the_cpu_run_and_resumes(tmp_path):
    """Stage one's steps, validation, loss reductions, checkpoints (with the distributed optimizer at DP=2, the
    device default) and resume with the model on the device."""
    from dist.pretrain_fixtures import data_prep_corpus, tiny_run_config, write_config

    corpus = data_prep_corpus(tmp_path / "corpus")
    outs = {}
    for name in ("device", "cpu"):
        outs[name] = tmp_path / name
        cfg = tiny_run_config(corpus, outs[name], schedule={"train_iters": 3, "global_batch_size": 8,
                                                            "micro_batch_size": 2, "eval_interval": 2, "eval_iters": 1},
                              checkpoint={"interval": 1, "keep_last": 3}, parallel={"threads_per_rank": 1})
        write_config(cfg, tmp_path / f"{name}.json")
        _run("pipeline.pretrain", tmp_path / f"{name}.json", simulated=name == "device")
    uninterrupted = _records(outs["device"])
    _assert_same_records(uninterrupted, _records(outs["cpu"]))
    _forget_last_step(outs["device"], 3)
    _run("pipeline.pretrain", tmp_path / "device.json", simulated=True)
    resumed = _records(outs["device"])
    assert resumed[3] == pytest.approx(uninterrupted[3], rel=1e-6)


def test_the_gpu_tests_workers_are_device_clean(tmp_path):
    """tests/test_gpu.py's workers, run here with the learner on the simulated device: every input they give the
    model is on its device and every comparison happens on the host (they never passed on a GPU before)."""
    from tiny_models import save_char_tokenizer

    hf_dir = save_random_llama(tmp_path / "hf", tiny_llama_config(hidden_size=192, head_dim=32), seed=4)
    save_char_tokenizer(hf_dir)
    (tmp_path / "equivalence").mkdir(), (tmp_path / "engine").mkdir()
    run_torchrun(DIST / "hf_equivalence_worker.py", 2, hf_dir, tmp_path / "equivalence", 2, 1, env=SIMULATED)
    for r in read_rank_results(tmp_path / "equivalence", 2):
        assert r["logits_max_abs_diff"] < 1e-4 and r["logprobs_max_abs_diff"] < 1e-4 and r["entropy_max_abs_diff"] < 1e-4
        assert r["export_not_bitwise"] == [] and r["export_missing"] == []
    assert read_rank_results(tmp_path / "equivalence", 2)[0]["roundtrip_not_bitwise"] == []
    run_torchrun(DIST / "engine_sync_worker.py", 1, hf_dir, tmp_path / "engine", 1, "torch", env=SIMULATED)
    r = read_rank_results(tmp_path / "engine", 1)[0]
    assert r["tokens_changed"] == [False, True, True] and max(r["max_abs_diff"]) < 1e-4
