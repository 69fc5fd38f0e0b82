"""Memory options of the training stages leave the maths unchanged: activation recomputation (stage one and the RL
learner), chunked log-probs / entropy, RL micro-batches trimmed to their own longest row; and bench.memory_plan, which
sizes recipes with them, measures the real model code."""

import json

import pytest
from conftest import read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config


@pytest.mark.multirank
@pytest.mark.parametrize("tp,pp", [(1, 1), (2, 1), (1, 2)])
def test_learner_memory_options_give_the_same_update(tmp_path, tp, pp):
    hf_dir = save_random_llama(tmp_path / "hf", tiny_llama_config(num_layers=2), seed=8)
    run_torchrun("tests/dist/memory_options_worker.py", tp * pp, hf_dir, tmp_path, tp, pp)
    for rank in read_rank_results(tmp_path, tp * pp):
        assert rank["grad_scale"] > 1e-4
        for name in ("recompute_full", "recompute_selective", "logprob_chunks", "trim_padding", "all"):
            r = rank[name]
            assert r["grad_rel_diff"] < 2e-5, (name, r)
            assert all(d < 1e-5 for d in r["metric_diffs"].values()), (name, r)
            if r["logp_max_diff"] is not None:
                assert r["logp_max_diff"] < 1e-4, (name, r)  # after two updates of lr 1e-3


@pytest.mark.multirank
def test_stage_one_recompute_gives_the_same_loss_curve(tmp_path):
    from dist.pretrain_fixtures import data_prep_corpus, losses, run, tiny_run_config, write_config

    corpus = data_prep_corpus(tmp_path / "corpus")
    curves = {}
    for mode in ("none", "full", "selective"):
        cfg = tiny_run_config(corpus, tmp_path / mode, schedule={"train_iters": 3, "global_batch_size": 8,
                                                                 "micro_batch_size": 2, "eval_interval": 0},
                              parallel={"threads_per_rank": 1, "recompute": mode})
        proc = run(1, write_config(cfg, tmp_path / f"{mode}.json"))
        assert proc.returncode == 0, proc.stdout[-3000:]
        curves[mode] = losses(tmp_path / mode)
    assert len(curves["none"]) == 3
    assert curves["full"] == pytest.approx(curves["none"], rel=1e-5)
    assert curves["selective"] == pytest.approx(curves["none"], rel=1e-5)


def test_bad_recompute_is_refused_with_the_field():
    from pipeline.pretrain_config import PretrainConfig
    from pipeline.rl.config import RLConfig

    with pytest.raises(ValueError, match=r"recompute='partial'; valid: \['none', 'selective', 'full'\]"):
        RLConfig(model_dir="x", train_questions="y", recompute="partial").validate(1, check_files=False)
    with pytest.raises(ValueError, match="logprob_chunk_tokens=-1"):
        RLConfig(model_dir="x", train_questions="y", logprob_chunk_tokens=-1).validate(1, check_files=False)
    cfg = PretrainConfig()
    cfg.parallel.recompute = "partial"
    with pytest.raises(ValueError, match=r"parallel.recompute='partial'"):
        cfg.validate(1)


@pytest.mark.cli
def test_memory_plan_extrapolates_the_layers_exactly(tmp_path):
    """The plan measures 2 and 4 layers and extrapolates to the depth: equal to measuring the depth directly, for both
    stages' losses (tests/test_gpu_check.py checks that the fake measurement is what real tensors hold)."""
    import subprocess
    import sys

    from conftest import REPO

    script = tmp_path / "check.py"
    script.write_text(f"""
import json, sys
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
import torch
from megatron_ext.distributed import init_distributed
from bench.memory_plan import Shape, _fake_step, measure_transient
from pipeline.rl.config import RLConfig
from tiny_models import tiny_llama_config
init_distributed()
rl = RLConfig(max_prompt_tokens=8, max_new_tokens=24, logprob_chunk_tokens=16)
out = {{}}
for loss, cfg, recompute in (("lm", None, "none"), ("policy", rl, "none"), ("policy", rl, "full")):
    shape = Shape(tiny_llama_config(num_layers=6), 2, 32, torch.float32, recompute, loss, rl_config=cfg)
    direct = _fake_step(shape, 6)
    out[loss + "-" + recompute] = [measure_transient(shape)["transient_bytes"],
                                   direct["total_bytes"] - direct["param_bytes"]]
print(json.dumps(out))
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (extrapolated, direct) in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        assert direct > 0 and extrapolated == pytest.approx(direct, rel=1e-6), name


@pytest.mark.cli
def test_memory_plan_of_the_a100_recipe_fits_with_headroom(tmp_path):
    """The shipped GPU recipe, planned at the paper's shapes (Llama-3.2-3B, 4 x 4024-token RL micro-batches, 128k
    vocabulary): both stages fit 80 GiB with >= 10% headroom, and without recomputation stage two would not."""
    import subprocess
    import sys

    from conftest import REPO

    def plan(*args):  # its own process: the plan sets up torch.distributed and Megatron's parallel state
        proc = subprocess.run([sys.executable, "-m", "bench.memory_plan", "--recipe", "llama32_3b_a100", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    printed = plan("--json", str(tmp_path / "plan.json"))
    assert "stage1: peak" in printed and "fits with >= 10%" in printed
    result = json.loads((tmp_path / "plan.json").read_text())
    assert result["model"]["params"] > 3.2e9 and result["model"]["vocab"] == 128256
    for stage in ("stage1", "stage2"):
        st = result["stages"][stage]
        assert st["capacity_gib"] == 80 and st["fits"] and st["peak_gib"] <= 72, (stage, st)
    plan("--set", "stage2.recompute=none", "--json", str(tmp_path / "without.json"))
    without = json.loads((tmp_path / "without.json").read_text())["stages"]["stage2"]
    assert not without["fits"] and without["transient_gib"] > 3 * result["stages"]["stage2"]["transient_gib"]


@pytest.mark.cli
def test_memory_plan_of_the_oat_zero_7b_recipe_fits_only_with_the_bf16_gradient_buffer(tmp_path):
    """Qwen2.5-Math-7B on 80 GiB with vLLM at 0.35 beside the learner: the recipe (bf16 gradient buffer) fits with
    >= 10% headroom; Megatron's default fp32 buffer (28 GiB) would not. RL only: no stage one is planned."""
    import subprocess
    import sys

    from conftest import REPO

    def plan(*args):
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.json"
        proc = subprocess.run([sys.executable, "-m", "bench.memory_plan", "--recipe", "qwen25_math_7b_oat_zero",
                               "--json", str(out), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    result = plan()
    assert 7.6e9 < result["model"]["params"] < 7.7e9 and result["model"]["vocab"] == 152064
    assert list(result["stages"]) == ["stage2"]
    stage2 = result["stages"]["stage2"]
    assert stage2["fits"] and stage2["peak_gib"] <= 72, stage2
    fp32 = plan("--set", "stage2.grad_reduce_in_fp32=true")["stages"]["stage2"]
    assert not fp32["fits"] and fp32["peak_gib"] - stage2["peak_gib"] == pytest.approx(7.62e9 * 2 / 2**30, rel=0.01)


@pytest.mark.parametrize("argv,message", [
    (["--recipe", "llama99"], "unknown recipe 'llama99'; valid: ['llama32_3b_a100', 'llama32_3b_a100_oat_zero_data', "
     "'qwen25_math_1p5b', 'qwen25_math_7b_oat_zero', 'smollm2_cpu', 'tiny_cpu']"),
    (["--recipe", "tiny_cpu", "--set", "stage2.recompute"], "expected section.field=value"),
    (["--recipe", "tiny_cpu", "--set", "stage3.lr=1"], "the recipe has no section 'stage3'"),
    (["--recipe", "tiny_cpu", "--set", "stage2.learning_rate=1"], "stage2 has no field 'learning_rate'"),
])
def test_memory_plan_refuses_bad_arguments(capsys, argv, message):
    from bench.memory_plan import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
