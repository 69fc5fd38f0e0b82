"""Optimizer steps through Megatron DDP, get_megatron_optimizer and the pipeline schedules on CPU: the loss
trajectory must not depend on the parallel layout (same weights, same global batch); weight decay spares the norms
with or without an LR scheduler."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

pytestmark = pytest.mark.multirank

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


WEIGHT_DECAY_STEP = """
import json, sys, torch
sys.path.insert(0, "tests")
from tiny_models import tiny_llama_config
from megatron_ext.distributed import init_distributed
from megatron_ext.models import build_model
from megatron_ext.schedule import wrap_with_ddp
from pipeline.optim import OptimConfig, build_optimizer
init_distributed()
model = wrap_with_ddp(build_model(tiny_llama_config(num_layers=2)))
optimizer = build_optimizer([model], OptimConfig(lr=0.5, weight_decay=0.1, clip_grad=0), dtype=torch.float32,
                            use_distributed_optimizer=False)
before = {n: p.detach().clone() for n, p in model.named_parameters()}
for p in model.parameters():
    p.main_grad.zero_()
optimizer.step()  # no scheduler, as the RL learner runs: only weight decay moves anything
print(json.dumps({n: (p.dim(), (p.detach() / before[n]).median().item()) for n, p in model.named_parameters()}))
"""


def test_weight_decay_spares_norms_without_a_scheduler():
    """AdamW with zero gradients moves weights by weight decay alone: matrices shrink by 1 - lr x wd, norm weights
    (1-D, exempt in Megatron's param groups) stay. The RL learner has no LR scheduler, through which alone Megatron
    applies the exemption: the norms decayed too."""
    proc = subprocess.run([sys.executable, "-c", WEIGHT_DECAY_STEP], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ratios = json.loads(proc.stdout.splitlines()[-1])
    assert {n: r for n, (dim, r) in ratios.items() if dim == 1} == {n: 1.0 for n, (dim, _) in ratios.items() if dim == 1}
    assert all(abs(r - (1 - 0.5 * 0.1)) < 1e-6 for dim, r in ratios.values() if dim == 2), ratios
