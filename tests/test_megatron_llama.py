"""Llama on Megatron-core vs transformers, and HF <-> Megatron conversion, at several TP/PP layouts."""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

WORKER = Path(__file__).parent / "dist" / "hf_equivalence_worker.py"


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    # vocab 250 is padded to 256 inside Megatron: exercises the padding mask in log-probs and the export slice
    tied = save_random_llama(root / "tied", tiny_llama_config(tied=True), seed=1)
    untied = save_random_llama(root / "untied", tiny_llama_config(tied=False), seed=2, max_shard_size="150KB")
    return {"tied": tied, "untied": untied}


@pytest.mark.multirank
@pytest.mark.parametrize(
    "flavour,tp,pp",
    [("tied", 1, 1), ("tied", 2, 1), ("tied", 1, 2), ("tied", 2, 2), ("untied", 2, 1), ("untied", 2, 2)],
)
def test_megatron_matches_transformers_and_round_trips(hf_dirs, tmp_path, flavour, tp, pp):
    hf_dir = hf_dirs[flavour]
    run_torchrun(WORKER, tp * pp, hf_dir, tmp_path, tp, pp)
    results = read_rank_results(tmp_path, tp * pp)
    last_stage = [r for r in results if r["pp_rank"] == pp - 1]
    assert len(last_stage) == tp
    for r in last_stage:
        assert r["logits_scale"] > 1.0  # logits are not trivially small
        assert r["logits_max_abs_diff"] < 1e-5
        assert r["logprobs_max_abs_diff"] < 1e-5
        assert r["entropy_max_abs_diff"] < 1e-5
        assert r["joint_logprobs_max_abs_diff"] < 1e-5 and r["joint_entropy_max_abs_diff"] < 1e-5, r
    for r in results:
        assert r["export_missing"] == [] and r["export_extra"] == []
        assert r["export_not_bitwise"] == []
        assert r["lm_head_exported"]
    writer = results[0]
    assert writer["roundtrip_not_bitwise"] == []
    assert writer["roundtrip_index_sharded"]
    assert writer["roundtrip_logits_equal"]


@pytest.mark.multirank
def test_convert_cli_reshards_tp2_checkpoint_to_tp1_hf(hf_dirs, tmp_path):
    from safetensors.torch import load_file

    import subprocess
    import sys

    from conftest import REPO

    run_torchrun("-m", 2, "megatron_ext.convert", "hf-to-megatron", "--hf-dir", hf_dirs["tied"],
                 "--out", tmp_path / "mcore", "--tp", "2")
    assert (tmp_path / "mcore" / "iter_0000000" / "COMPLETE").exists()
    proc = subprocess.run([sys.executable, "-m", "megatron_ext.convert", "megatron-to-hf", "--checkpoint",
                           str(tmp_path / "mcore"), "--out", str(tmp_path / "back")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    original = load_file(hf_dirs["tied"] / "model.safetensors")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert sorted(original) == sorted(back)
    assert all(torch.equal(original[k], back[k]) for k in original)


# ---- bad input: clear errors before any weight is loaded ------------------------------------------------


def test_tp_not_dividing_kv_heads_is_refused():
    from megatron_ext.models import validate_model_config

    with pytest.raises(ValueError, match=r"tensor_parallel=4 does not divide num_key_value_heads=2.*\[1, 2\]"):
        validate_model_config(tiny_llama_config(), tp=4, pp=1)


def test_pp_not_dividing_layers_is_refused():
    from megatron_ext.models import validate_model_config

    with pytest.raises(ValueError, match=r"pipeline_parallel=3 does not divide num_hidden_layers=4"):
        validate_model_config(tiny_llama_config(), tp=1, pp=3)


def test_unregistered_model_type_is_refused_naming_the_supported_families():
    from transformers import GPT2Config

    from megatron_ext.models import validate_model_config

    with pytest.raises(ValueError, match="model_type 'gpt2' is not a supported model family; supported: 'llama'.*'qwen2'.*'qwen3'"):
        validate_model_config(GPT2Config(), tp=1, pp=1)


def _rewrite_checkpoint(src: Path, dst: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_missing_tensor_is_named(hf_dirs, tmp_path):
    from transformers import AutoConfig

    from megatron_ext.weights import HFCheckpointReader, check_hf_checkpoint

    bad = _rewrite_checkpoint(hf_dirs["tied"], tmp_path / "bad", lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"'model.layers.2.mlp.up_proj.weight' is missing"):
        check_hf_checkpoint(HFCheckpointReader(bad), AutoConfig.from_pretrained(bad))


def test_misshaped_tensor_is_named(hf_dirs, tmp_path):
    from transformers import AutoConfig

    from megatron_ext.weights import HFCheckpointReader, check_hf_checkpoint

    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = t["model.layers.0.self_attn.k_proj.weight"][:16]

    bad = _rewrite_checkpoint(hf_dirs["tied"], tmp_path / "bad", shrink)
    with pytest.raises(ValueError, match=r"'model.layers.0.self_attn.k_proj.weight' has shape \[16, 96\], expected \[32, 96\]"):
        check_hf_checkpoint(HFCheckpointReader(bad), AutoConfig.from_pretrained(bad))


@pytest.mark.cli
def test_cli_refuses_bad_checkpoint_before_loading(hf_dirs, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    bad = _rewrite_checkpoint(hf_dirs["tied"], tmp_path / "bad", lambda t: t.pop("model.norm.weight"))
    proc = subprocess.run([sys.executable, "-m", "megatron_ext.convert", "hf-to-megatron", "--hf-dir", str(bad),
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "'model.norm.weight' is missing" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_directory_without_safetensors_is_refused(tmp_path):
    from megatron_ext.weights import HFCheckpointReader

    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        HFCheckpointReader(tmp_path)
