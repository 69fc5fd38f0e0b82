"""GPU paths (transformer-engine layer specs, CUDA vLLM, the torch engine on CUDA, nccl). Skipped without CUDA;
run on the device machine:
    .venv/bin/python -m pytest -q tests/test_gpu.py
"""

from pathlib import Path

import pytest
from conftest import read_rank_results, run_torchrun
from tiny_models import save_char_tokenizer, save_random_llama, tiny_llama_config

pytestmark = pytest.mark.gpu
DIST = Path(__file__).parent / "dist"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = save_random_llama(tmp_path_factory.mktemp("gpu") / "hf", tiny_llama_config(hidden_size=192, head_dim=32), seed=4)
    save_char_tokenizer(d)
    return d


def test_transformer_engine_model_matches_transformers(model_dir, tmp_path):
    from megatron_ext.models import HAVE_TE

    if not HAVE_TE:
        pytest.skip("transformer-engine is not installed")
    run_torchrun(DIST / "hf_equivalence_worker.py", 1, model_dir, tmp_path, 1, 1, env={"NVIDIA_TF32_OVERRIDE": "0"})
    r = read_rank_results(tmp_path, 1)[0]
    assert r["logits_max_abs_diff"] < 1e-3  # fp32 through TE kernels (TF32 off)
    assert r["export_not_bitwise"] == [] and r["roundtrip_not_bitwise"] == []


def test_cuda_vllm_logprobs_match_learner_after_sync(model_dir, tmp_path):
    pytest.importorskip("vllm")
    run_torchrun(DIST / "engine_sync_worker.py", 1, model_dir, tmp_path, 1, "vllm", timeout=900,
                 env={"NVIDIA_TF32_OVERRIDE": "0"})
    r = read_rank_results(tmp_path, 1)[0]
    assert r["tokens_changed"] == [False, True, True]
    assert max(r["max_abs_diff"]) < 1e-3


def test_cuda_torch_engine_logprobs_match_learner_after_sync(model_dir, tmp_path):
    """The torch engine's lean decoder on CUDA (fused projections, preallocated KV cache, baddbmm attention)."""
    run_torchrun(DIST / "engine_sync_worker.py", 1, model_dir, tmp_path, 1, "torch", timeout=900,
                 env={"NVIDIA_TF32_OVERRIDE": "0"})
    r = read_rank_results(tmp_path, 1)[0]
    assert r["tokens_changed"] == [False, True, True]
    assert max(r["max_abs_diff"]) < 1e-3
