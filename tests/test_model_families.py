"""Model families (megatron_ext.models): Llama, Qwen2 / Qwen2.5 / Qwen2.5-Math (q/k/v bias; tied and untied) and
Qwen3 dense (per-head q/k RMSNorm before RoPE, explicit head_dim != hidden / heads), on tiny random checkpoints
built with transformers' own config classes, biases and norm weights perturbed away from transformers' zeros and
ones (a converter or engine that drops or misplaces them fails). Per family at TP=2 and PP=2: learner logits and
gradients equal transformers', the HF export and a saved checkpoint are bit-exact, the RL update in the
shared-prompt layout equals the per-response one; `python -m megatron_ext.convert` round-trips bit for bit across
layouts (TP2 checkpoint -> PP2 export); both rollout engines (torch: lean decoder on its fused kernels; vLLM)
log-prob their samples as the learner does after each weight push. The registry refuses unsupported families
(Gemma, Mixtral) before any process group starts, naming the supported ones; sliding-window attention and an
o_proj bias are refused; the presets have the published models' parameter counts."""

import math
from pathlib import Path

import pytest
import torch
from conftest import REPO, read_rank_results, run_torchrun
from tiny_models import save_char_tokenizer, save_random_model, tiny_llama_config, tiny_qwen2_config, tiny_qwen3_config

DIST = Path(__file__).parent / "dist"
CHECKPOINTS = {
    "qwen2": lambda: tiny_qwen2_config(tied=False),  # Qwen2.5-Math-7B's layout: untied head
    "qwen2-tied": lambda: tiny_qwen2_config(tied=True),  # Qwen2.5-Math-1.5B / Qwen2.5-1.5B: tied
    "qwen3": lambda: tiny_qwen3_config(),  # Qwen3-1.7B: tied; head_dim 32 with hidden 96 / 4 heads
}
SUPPORTED = r"supported: 'llama' \(Llama-3.x.*'qwen2' \(Qwen2, Qwen2.5, Qwen2.5-Math\).*'qwen3' \(Qwen3 dense\)"


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    dirs = {}
    for seed, (name, make) in enumerate(CHECKPOINTS.items()):
        dirs[name] = save_random_model(root / name, make(), seed=20 + seed)
        save_char_tokenizer(dirs[name])
    return dirs


# ---- the registry: what each family maps, what is refused ------------------------------------------------


def test_each_family_maps_to_its_megatron_block_and_hf_tensors():
    from megatron_ext.models import FAMILIES, model_family, supported_model_types, transformer_config_from_hf
    from megatron_ext.weights import expected_hf_shapes

    assert supported_model_types() == ["llama", "qwen2", "qwen3"] and set(FAMILIES) == {"llama", "qwen2", "qwen3"}
    llama, qwen2, qwen3 = tiny_llama_config(num_layers=2), tiny_qwen2_config(), tiny_qwen3_config()
    assert [model_family(c).name for c in (llama, qwen2, qwen3)] == ["Llama", "Qwen2", "Qwen3"]
    blocks = {c.model_type: transformer_config_from_hf(c) for c in (llama, qwen2, qwen3)}
    assert [(b.add_qkv_bias, b.qk_layernorm) for b in blocks.values()] == [(False, False), (True, False), (False, True)]
    assert blocks["qwen3"].kv_channels == 32 != 96 // 4 and blocks["qwen2"].kv_channels == 32
    assert not any(b.add_bias_linear for b in blocks.values())
    shapes = {c.model_type: expected_hf_shapes(c) for c in (llama, qwen2, qwen3)}
    assert shapes["qwen2"]["model.layers.1.self_attn.k_proj.bias"] == (64,)
    assert shapes["qwen3"]["model.layers.1.self_attn.q_norm.weight"] == (32,)
    assert shapes["qwen3"]["model.layers.0.self_attn.q_proj.weight"] == (4 * 32, 96)
    assert "lm_head.weight" in shapes["qwen2"] and "lm_head.weight" not in shapes["qwen3"]
    def layer_tensors(t):
        return {n.split(".", 3)[3] for n in shapes[t] if n.startswith("model.layers.")}

    extra = {t: sorted(layer_tensors(t) - layer_tensors("llama")) for t in shapes}
    assert extra == {"llama": [], "qwen2": ["self_attn.k_proj.bias", "self_attn.q_proj.bias", "self_attn.v_proj.bias"],
                     "qwen3": ["self_attn.k_norm.weight", "self_attn.q_norm.weight"]}


@pytest.mark.parametrize("family", ["gemma", "mixtral"])
def test_an_unsupported_family_is_refused_before_any_process_group_naming_the_supported_ones(tmp_path, capsys, family):
    import torch.distributed as dist
    from transformers import GemmaConfig, MixtralConfig

    from megatron_ext import convert
    from megatron_ext.models import validate_model_config
    from pipeline.rl.lean_decoder import unsupported_reason

    config = {"gemma": GemmaConfig, "mixtral": MixtralConfig}[family](num_hidden_layers=2)
    with pytest.raises(ValueError, match=rf"model_type '{family}' is not a supported model family; {SUPPORTED}"):
        validate_model_config(config, tp=1, pp=1)
    assert f"model_type '{family}' is not a supported model family" in unsupported_reason(config)  # torch engine
    config.save_pretrained(tmp_path / "hf")  # no weights: refused on its config alone
    rc = convert.main(["hf-to-megatron", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "out"), "--tp", "2"])
    assert rc == 2 and not dist.is_initialized() and not (tmp_path / "out").exists()
    assert f"model_type '{family}' is not a supported model family" in capsys.readouterr().err


def test_sliding_window_and_o_proj_bias_are_refused_with_the_fix():
    from megatron_ext.models import validate_model_config
    from pipeline.rl.lean_decoder import unsupported_reason

    sliding = tiny_qwen2_config(use_sliding_window=True, max_window_layers=1)  # layer 1 would slide
    with pytest.raises(ValueError, match=r"Qwen2 config not supported: sliding-window attention is not supported "
                                         r"\(layers \[1\] are 'sliding_attention'\): set use_sliding_window=false"):
        validate_model_config(sliding)
    assert "sliding-window" in unsupported_reason(sliding)
    for config in (tiny_qwen3_config(attention_bias=True), tiny_llama_config(attention_bias=True)):
        with pytest.raises(ValueError, match=r"attention_bias=True is not supported on Megatron: it adds an o_proj bias"):
            validate_model_config(config)
        assert unsupported_reason(config) is None  # the torch engine's decoder runs q/k/v/o biases
    validate_model_config(tiny_qwen2_config(sliding_window=4096, max_window_layers=1))  # released: window off


@pytest.mark.parametrize("preset,family,params,tied", [
    ("qwen2.5-math-1.5b", "qwen2", 1_543_714_304, True),
    ("qwen2.5-math-7b", "qwen2", 7_615_616_512, False),
    ("qwen2.5-1.5b", "qwen2", 1_543_714_304, True),
    ("qwen3-1.7b", "qwen3", 1_720_574_976, True),
    ("llama3.2-3b", "llama", 3_212_749_824, True),
])
def test_presets_have_the_published_shapes(preset, family, params, tied):
    from megatron_ext.models import validate_model_config
    from megatron_ext.training import train_flops_per_token
    from megatron_ext.weights import expected_hf_shapes
    from pipeline.model_presets import build_preset

    config = build_preset(preset)
    assert config.model_type == family and config.tie_word_embeddings == tied
    shapes = expected_hf_shapes(config)
    assert sum(math.prod(s) for s in shapes.values()) == params  # the published checkpoint's tensor count
    assert validate_model_config(config, tp=2, pp=2).model_types == (family,)
    # FLOPs from the same shapes: 6 x (matmul weights + output layer) + causal attention at the config's head_dim
    matmul = sum(math.prod(s) for n, s in shapes.items() if len(s) == 2 and "embed" not in n and "lm_head" not in n)
    hd = config.head_dim if family == "qwen3" else config.hidden_size // config.num_attention_heads
    attention = config.num_hidden_layers * 2 * 2 * config.num_attention_heads * hd * (4096 + 1) / 2
    expected = 3 * (2 * matmul + 2 * config.hidden_size * config.vocab_size + attention)
    assert train_flops_per_token(config, 4096) == pytest.approx(expected, rel=1e-12)


def test_tiny_family_presets_build_each_family():
    from megatron_ext.models import validate_model_config
    from pipeline.model_presets import build_preset

    qwen2, qwen3 = build_preset("tiny-qwen2.5"), build_preset("tiny-qwen3")
    assert validate_model_config(qwen2, tp=2, pp=2).qkv_bias and validate_model_config(qwen3, tp=2, pp=2).qk_norm
    assert qwen3.head_dim == 48 != qwen3.hidden_size // qwen3.num_attention_heads
    with pytest.raises(ValueError, match=r"model.overrides has fields Qwen3Config does not know: \['hiden_size'\]"):
        build_preset("tiny-qwen3", overrides={"hiden_size": 8})


# ---- the torch engine's decoder on Qwen3's q/k norm ------------------------------------------------------


@pytest.mark.kernels
def test_lean_decoder_runs_qwen3_on_its_kernels_and_torch_ops_as_transformers_does(hf_dirs):
    """Qwen3's per-head q/k RMSNorm before RoPE: the fused-kernel decode steps equal the torch-op path's, and the
    engine's sampled log-probs equal transformers' teacher-forced ones on both paths (Qwen2's bias and Llama are
    tests/test_torch_engine.py's)."""
    from transformers import AutoModelForCausalLM

    from pipeline.rl import decode_kernels
    from pipeline.rl.engine import EngineSpec, SamplingSettings
    from pipeline.rl.lean_decoder import LeanDecoder
    from pipeline.rl.torch_engine import TorchEngine

    kernels = decode_kernels.load()
    assert kernels is not None, decode_kernels.failure()
    model = AutoModelForCausalLM.from_pretrained(hf_dirs["qwen3"], dtype=torch.float32).eval()
    plain, fused = LeanDecoder(model), LeanDecoder(model, kernels=kernels)
    assert plain.layers[0]["q_norm"] is not None and plain.layers[0]["qkv_bias"] is None
    prompts = [[5, 17, 30, 44, 9], [12, 3], [40, 41, 42]]
    ids = torch.zeros(3, 5, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding
        ids[i, 5 - len(p):], mask[i, 5 - len(p):] = torch.tensor(p), 1
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        expected, got = plain.start(ids, mask, 20), fused.start(ids, mask, 20)
        for step in range(19):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=lambda m, step=step: f"step {step}: {m}")
            tokens = torch.randint(2, 250, (3,), generator=g)
            expected, got = plain.step(tokens), fused.step(tokens)
    reference = AutoModelForCausalLM.from_pretrained(hf_dirs["qwen3"], dtype=torch.float32).eval()
    for use_kernels in (True, False):
        engine = TorchEngine(EngineSpec(str(hf_dirs["qwen3"]), options={"fused_kernels": use_kernels}))
        assert (engine.decoder.kernels is not None) == use_kernels
        samples = engine.generate(prompts, SamplingSettings(max_new_tokens=16, temperature=0.8, n=2, seed=0))
        with torch.no_grad():
            for prompt, group in zip(prompts, samples):
                for s in group:
                    logits = reference(torch.tensor([prompt + s.token_ids])).logits[0, len(prompt) - 1 : -1] / 0.8
                    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.token_ids)[:, None]).squeeze(-1)
                    torch.testing.assert_close(torch.tensor(s.logprobs), ref, atol=2e-5, rtol=0)


# ---- multi-rank: learner vs transformers, export, shared-prompt update; conversion CLI; engines ----------


@pytest.mark.multirank
@pytest.mark.parametrize("flavour,tp,pp", [("qwen2", 2, 1), ("qwen2-tied", 1, 2), ("qwen3", 2, 1), ("qwen3", 1, 2)])
def test_learner_equals_transformers_exports_bitwise_and_shares_prompts(hf_dirs, tmp_path, flavour, tp, pp):
    run_torchrun(DIST / "family_worker.py", tp * pp, hf_dirs[flavour], tmp_path, tp, pp)
    results = read_rank_results(tmp_path, tp * pp)
    for r in results:
        assert (r["add_qkv_bias"], r["qk_layernorm"]) == ((True, False) if flavour.startswith("qwen2") else (False, True))
        assert r["export_missing"] == [] and r["export_extra"] == [] and r["export_not_bitwise"] == [], r
        s = r["shared"]
        assert s["shared_layout_used"] and s["plain_attention_calls"] == 0 and s["shared_attention_calls"] > 0, s
        assert s["grad_scale"] > 0 and s["grad_rel_diff"] < 1e-5, s
        for key, diff in s["metric_diffs"].items():
            assert diff <= 1e-5 * max(1.0, abs(s["metrics"][key])), (key, s)
    last = [r for r in results if r["pp_rank"] == pp - 1]
    for r in last:
        assert r["logits_scale"] > 1.0 and r["logits_max_abs_diff"] < 1e-5 and r["logprobs_max_abs_diff"] < 1e-5, r
    for r in results:  # every HF tensor's gradient (first stage: embeddings, layer 0; last: the rest and the head)
        assert r["grad_missing"] == [] or pp > 1, r
        assert r["grad_worst_relative_diff"] < 1e-5, (r["grad_worst"], r["grad_worst_relative_diff"])
    if pp > 1:  # between them the stages compared every tensor
        assert sum(r["grad_compared"] for r in results if r["tp_rank"] == 0) >= len(results[0]["exported_names"])
    writer = results[0]
    assert writer["roundtrip_not_bitwise"] == [] and writer["roundtrip_extra"] == [], writer
    assert writer["roundtrip_index_sharded"] and writer["roundtrip_logits_equal"]


@pytest.mark.multirank
@pytest.mark.parametrize("flavour", ["qwen2", "qwen2-tied", "qwen3"])
def test_convert_cli_round_trips_bitwise_from_tp2_to_pp2(hf_dirs, tmp_path, flavour):
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from megatron_ext.weights import HFCheckpointReader

    src = hf_dirs[flavour]
    run_torchrun("-m", 2, "megatron_ext.convert", "hf-to-megatron", "--hf-dir", src, "--out", tmp_path / "mcore",
                 "--tp", "2")
    run_torchrun("-m", 2, "megatron_ext.convert", "megatron-to-hf", "--checkpoint", tmp_path / "mcore",
                 "--out", tmp_path / "back", "--pp", "2")
    original, back = load_file(src / "model.safetensors"), HFCheckpointReader(tmp_path / "back")
    assert sorted(original) == sorted(back.weight_map)
    assert [n for n in original if not torch.equal(original[n], back.get(n))] == []

    def config_of(hf_dir):
        return {k: v for k, v in AutoConfig.from_pretrained(hf_dir).to_dict().items() if k != "_name_or_path"}

    assert config_of(tmp_path / "back") == config_of(src)  # the family's config class and every field
    assert (tmp_path / "back" / "tokenizer.json").exists()


@pytest.mark.multirank
@pytest.mark.vllm
@pytest.mark.parametrize("flavour,tp,pp", [("qwen2-tied", 1, 2), ("qwen2", 2, 1), ("qwen3", 2, 1), ("qwen3", 1, 2)])
def test_both_engines_logprobs_equal_the_learner_after_each_weight_push(hf_dirs, tmp_path, flavour, tp, pp):
    run_torchrun(DIST / "family_engine_worker.py", tp * pp, hf_dirs[flavour], tmp_path, tp, pp, "torch,vllm",
                 timeout=600)
    results = read_rank_results(tmp_path, tp * pp)
    assert all(r["kernels"] for r in results)  # the torch engine decoded on its fused kernels
    for r in (r for r in results if r["last_stage"]):
        for engine in ("torch", "vllm"):
            assert len(r[engine]["max_abs_diff"]) == 3 and max(r[engine]["max_abs_diff"]) < 1e-4, (engine, r)
            assert r[engine]["tokens_changed"] == [False, True, True], (engine, r)  # the pushes reached the engine


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from dist.pretrain_fixtures import data_prep_corpus

    return data_prep_corpus(tmp_path_factory.mktemp("corpus"), num_docs=400)


@pytest.mark.multirank
@pytest.mark.parametrize("preset,parallel", [("tiny-qwen3", {"tp": 2})])  # ("tiny-qwen2.5", {"pp": 2}) works too
def test_stage_one_trains_a_qwen_preset_from_random_init_and_exports_it(corpus, tmp_path, preset, parallel):
    """A recipe naming a Qwen preset: random init in HF space (the family's own transformers class), training at
    TP=2 (the q/k norms' gradients summed over TP), the HF export loads in transformers as that family with its
    biases / q-k norms trained."""
    import json

    from dist.pretrain_fixtures import losses, run, tiny_run_config, write_config
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    overrides = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                 "num_key_value_heads": 2, **({"head_dim": 24} if preset == "tiny-qwen3" else {})}
    cfg = tiny_run_config(corpus, tmp_path / "run", model={"preset": preset, "overrides": overrides},
                          schedule={"train_iters": 4, "global_batch_size": 8, "micro_batch_size": 2,
                                    "eval_interval": 0, "eval_iters": 0},
                          checkpoint={"interval": 4, "keep_last": 1},
                          parallel={**parallel, "threads_per_rank": 1})
    proc = run(2, write_config(cfg, tmp_path / "run.json"))
    assert proc.returncode == 0, proc.stdout[-5000:]
    train = losses(tmp_path / "run")
    assert len(train) == 4 and train[-1] < train[0]
    hf = tmp_path / "run" / "hf"
    family = {"tiny-qwen2.5": "qwen2", "tiny-qwen3": "qwen3"}[preset]
    assert json.loads((hf / "config.json").read_text())["model_type"] == family
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    assert type(model).__name__ == {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[family]
    tensors = load_file(hf / "model.safetensors")
    trained = ["model.layers.1.self_attn.q_proj.bias"] if family == "qwen2" else \
        ["model.layers.1.self_attn.q_norm.weight", "model.layers.0.self_attn.k_norm.weight"]
    for name in trained:  # initialised to zeros / ones by transformers, moved by training
        initial = torch.zeros_like(tensors[name]) if name.endswith("bias") else torch.ones_like(tensors[name])
        assert not torch.equal(tensors[name], initial), name


def test_repo_has_no_model_type_branches_outside_the_registry():
    """DESIGN.md: nothing outside megatron_ext/models/families.py branches on model_type."""
    offenders = []
    for path in [*REPO.glob("megatron_ext/**/*.py"), *REPO.glob("pipeline/**/*.py")]:
        if path.name == "families.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "model_type" in line and ("==" in line or " in " in line or "!=" in line):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert offenders == []
