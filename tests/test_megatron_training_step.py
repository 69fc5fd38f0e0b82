"""Optimizer steps through Megatron DDP, get_megatron_optimizer and the pipeline schedules on CPU: the loss
trajectory must not depend on the parallel layout (same weights, same global batch)."""

from pathlib import Path

import pytest
from conftest import read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

WORKER = Path(__file__).parent / "dist" / "train_step_worker.py"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return save_random_llama(tmp_path_factory.mktemp("hf") / "tied", tiny_llama_config(tied=True), seed=5)


@pytest.fixture(scope="module")
def reference_losses(hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run_torchrun(WORKER, 1, hf_dir, out, 1, 1, 0)
    return read_rank_results(out, 1)[0]["losses"]


@pytest.mark.parametrize(
    "nproc,tp,pp,dist_opt",
    [(2, 2, 1, 1), (2, 1, 2, 0), (2, 1, 1, 0), (2, 1, 1, 1), (4, 2, 2, 0)],
    ids=["tp2-distopt", "pp2-tied", "dp2", "dp2-distopt", "tp2xpp2"],
)
def test_loss_trajectory_is_layout_independent(hf_dir, reference_losses, tmp_path, nproc, tp, pp, dist_opt):
    run_torchrun(WORKER, nproc, hf_dir, tmp_path, tp, pp, dist_opt)
    losses = read_rank_results(tmp_path, nproc)[0]["losses"]
    assert reference_losses[0] > reference_losses[-1]  # the steps actually train
    assert losses == pytest.approx(reference_losses, abs=1e-5)
