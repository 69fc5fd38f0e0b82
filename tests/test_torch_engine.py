"""The torch rollout engine's lean decoder against transformers' Llama forward: every sampled token's log-prob
equals the teacher-forced log-prob of transformers' model on prompt + response (left-padded prompts of different
lengths, GQA, llama3 RoPE, attention bias, tied and untied heads, Qwen2, rows leaving the batch at EOS, after a
weight update, samples sharing their prompt's prefill), with the fused CPU decode kernels and with torch ops; the
kernels' decode steps equal the torch-op path's; without a compiler the engine says so and decodes with torch ops;
a model it cannot run is refused with the alternatives named; and the sampler draws from the stated distribution
(temperature, top-p), in torch ops and in the kernel."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.rl import decode_kernels
from pipeline.rl.engine import EngineSpec, SamplingSettings
from pipeline.rl.lean_decoder import LeanDecoder
from pipeline.rl.torch_engine import TorchEngine, _sample_next
from tiny_models import save_char_tokenizer, save_random_llama, tiny_llama_config


def require_kernels():
    """The compiled decode kernels; a failed build is a failure where a compiler and ninja exist."""
    module = decode_kernels.load()
    if module is None:
        if shutil.which("g++") or shutil.which("c++"):
            pytest.fail(f"the decode kernels did not build: {decode_kernels.failure()}")
        pytest.skip("no C++ compiler here: the fused decode kernels cannot be built")
    return module


def engine_spec(model_dir, fused: bool) -> EngineSpec:
    if fused:
        require_kernels()
    return EngineSpec(str(model_dir), options={"fused_kernels": fused})

PROMPTS = [[5, 17, 30, 44, 9, 60, 71], [12, 3], [40, 41, 42, 43, 44], [7]]


def make_model(tmp_path, **overrides):
    d = save_random_llama(tmp_path / "hf", tiny_llama_config(**overrides), seed=1)
    if overrides.get("attention_bias"):  # transformers initialises biases to zero; make them matter
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
        model.save_pretrained(d)
    save_char_tokenizer(d)
    return d


def make_qwen2(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(2)
    config = Qwen2Config(vocab_size=250, hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                         num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, bos_token_id=0, eos_token_id=1)
    model = Qwen2ForCausalLM(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):  # Qwen2's q/k/v bias start at zero; make them matter
                p.normal_(0, 0.1)
    model.save_pretrained(tmp_path / "qwen2")
    save_char_tokenizer(tmp_path / "qwen2")
    return tmp_path / "qwen2"


def reference_logprobs(model_dir, prompts, samples, temperature=1.0):
    """Teacher-forced log-probs of each sample's tokens under a freshly loaded transformers model (sdpa)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for prompt, group in zip(prompts, samples):
            for s in group:
                ids = torch.tensor([prompt + s.token_ids])
                logits = model(ids).logits[0, len(prompt) - 1 : -1] / temperature
                logp = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.token_ids)[:, None]).squeeze(-1)
                out.append((logp, torch.tensor(s.logprobs)))
    return out


@pytest.mark.parametrize("fused", [pytest.param(True, id="kernels", marks=pytest.mark.kernels), pytest.param(False, id="torch-ops")])
@pytest.mark.parametrize("overrides", [{}, {"tied": False, "attention_bias": True}, "qwen2"],
                         ids=["tied", "untied+bias", "qwen2"])
def test_sampled_logprobs_match_transformers_forward(tmp_path, overrides, fused):
    model_dir = make_qwen2(tmp_path) if overrides == "qwen2" else make_model(tmp_path, **overrides)
    engine = TorchEngine(engine_spec(model_dir, fused))
    assert (engine.decoder.kernels is not None) == fused
    prompts = PROMPTS + [PROMPTS[1]]  # a repeated prompt, apart from its first copy: all six rows share one prefill
    samples = engine.generate(prompts, SamplingSettings(max_new_tokens=24, temperature=0.8, n=3, seed=0))
    assert [len(g) for g in samples] == [3] * len(prompts)
    assert all(len(s.token_ids) == 24 if s.finish_reason == "length" else s.token_ids[-1] in engine.eos_ids
               for g in samples for s in g)
    assert all(len({tuple(s.token_ids) for s in g}) == len(g) for g in samples)  # a shared prefill, own draws
    for ref, ours in reference_logprobs(model_dir, prompts, samples, temperature=0.8):
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)


def test_a_model_the_decoder_cannot_run_is_refused_with_the_alternatives(tmp_path):
    model_dir = make_model(tmp_path, hidden_act="gelu")
    with pytest.raises(ValueError, match=r"hidden_act 'gelu'.*'vllm'.*'hf'"):
        TorchEngine(EngineSpec(str(model_dir)))


def test_a_fused_kernels_option_that_is_not_a_boolean_is_refused(tmp_path):
    with pytest.raises(ValueError, match="engine_options.fused_kernels must be true or false, got 'false'"):
        TorchEngine(EngineSpec(str(make_model(tmp_path)), options={"fused_kernels": "false"}))


@pytest.mark.parametrize("fused", [pytest.param(True, id="kernels", marks=pytest.mark.kernels), pytest.param(False, id="torch-ops")])
def test_rows_that_stop_early_leave_the_batch_without_disturbing_the_rest(tmp_path, fused):
    model_dir = make_model(tmp_path)
    engine = TorchEngine(engine_spec(model_dir, fused))
    sampling = SamplingSettings(max_new_tokens=30, n=4, seed=3)
    free = [s for g in engine.generate(PROMPTS, sampling) for s in g]
    # make the tokens that rows sample most often early on EOS tokens: those rows stop there, the others run on
    counts = torch.bincount(torch.tensor([t for s in free for t in s.token_ids[2:8]]), minlength=engine.vocab_size)
    engine.eos_ids = counts.argsort(descending=True)[:2].tolist()
    samples = engine.generate(PROMPTS, sampling)
    flat = [s for g in samples for s in g]
    stopped = [s for s in flat if s.finish_reason == "stop"]
    assert 0 < len(stopped) < len(flat) and sum(len(s.token_ids) < 10 for s in stopped) >= len(flat) // 4
    for s in stopped:
        assert s.token_ids[-1] in engine.eos_ids and not set(s.token_ids[:-1]) & set(engine.eos_ids)
    for ref, ours in reference_logprobs(model_dir, PROMPTS, samples):
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)


def test_weight_update_reaches_the_decoder(tmp_path):
    from transformers import AutoModelForCausalLM

    model_dir = make_model(tmp_path)
    engine = TorchEngine(EngineSpec(str(model_dir)))
    moved = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in moved.parameters():
            p.add_(0.2 * p.std() * torch.randn_like(p))
    moved.save_pretrained(tmp_path / "moved")
    engine.update_weights(moved.state_dict().items())
    sampling = SamplingSettings(max_new_tokens=16, n=2, seed=0)
    samples = engine.generate(PROMPTS, sampling)
    for ref, ours in reference_logprobs(tmp_path / "moved", PROMPTS, samples):
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("fused", [pytest.param(True, id="kernel", marks=pytest.mark.kernels), pytest.param(False, id="torch-ops")])
@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.6)])
def test_sampler_draws_from_the_stated_distribution(temperature, top_p, fused):
    kernels = require_kernels() if fused else None
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 2
    n = 40_000
    sampling = SamplingSettings(max_new_tokens=1, temperature=temperature, top_p=top_p)
    tokens, logps = _sample_next(logits.expand(n, -1), sampling, torch.Generator().manual_seed(1), kernels)
    probs = torch.softmax(logits[0] / temperature, -1)
    if top_p < 1.0:  # the smallest set of most likely tokens whose mass reaches top_p, renormalised
        order = probs.argsort(descending=True)
        keep = order[: int((probs[order].cumsum(0) - probs[order] < top_p).sum())]
        nucleus = torch.zeros_like(probs)
        nucleus[keep] = probs[keep]
        probs = nucleus / nucleus.sum()
        assert set(tokens.unique().tolist()) <= set(keep.tolist())
    freq = torch.bincount(tokens, minlength=12).double() / n
    assert (freq - probs.double()).abs().max() < 4 * (0.25 / n) ** 0.5 + 1e-9  # 4 sigma of a frequency
    torch.testing.assert_close(logps, probs.log()[tokens], atol=1e-5, rtol=0)


@pytest.mark.kernels
def test_the_sampling_kernel_draws_the_torch_samplers_tokens_from_the_same_uniforms():
    kernels = require_kernels()
    torch.manual_seed(0)
    logits = (torch.randn(300, 64) * 3).T  # [rows, V] as the decoder returns it: a view of [V, rows]
    sampling = SamplingSettings(max_new_tokens=1, temperature=0.8)
    plain = _sample_next(logits, sampling, torch.Generator().manual_seed(7))
    fused = _sample_next(logits, sampling, torch.Generator().manual_seed(7), kernels)
    assert torch.equal(fused[0], plain[0])
    torch.testing.assert_close(fused[1], plain[1], atol=2e-6, rtol=0)


@pytest.mark.kernels
@pytest.mark.parametrize("shape", ["gqa", "head_dim_36", "qwen2"])
def test_fused_decode_steps_equal_the_torch_op_path(tmp_path, shape):
    """Step by step, from the same caches: GQA 3:1 (head_dim 16), head_dim 36 (a 32-wide block and a tail),
    Qwen2's q/k/v bias; left-padded prompts, a prompt repeated across rows, rows dropped mid-way, and more than
    32 cached positions (the blocked score loop and its tail)."""
    from transformers import AutoModelForCausalLM

    kernels = require_kernels()
    if shape == "qwen2":
        model_dir = make_qwen2(tmp_path)
    else:
        model_dir = make_model(tmp_path, **({} if shape == "gqa" else
                                             {"head_dim": 36, "num_attention_heads": 4, "num_key_value_heads": 4}))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    plain, fused = LeanDecoder(model), LeanDecoder(model, kernels=kernels)
    max_len, new_tokens = max(len(p) for p in PROMPTS), 40
    ids = torch.zeros(len(PROMPTS), max_len, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(PROMPTS):
        ids[i, max_len - len(p):] = torch.tensor(p)
        mask[i, max_len - len(p):] = 1
    rows = torch.tensor([0, 0, 1, 2, 3, 3])
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        expected, got = plain.start(ids, mask, new_tokens, rows=rows), fused.start(ids, mask, new_tokens, rows=rows)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        for step in range(new_tokens - 1):
            if step == 12:
                keep = torch.tensor([0, 2, 3, 5])
                plain.keep_rows(keep)
                fused.keep_rows(keep)
            tokens = torch.randint(2, model.config.vocab_size, (expected.shape[0] if step != 12 else 4,),
                                   generator=generator)
            expected, got = plain.step(tokens), fused.step(tokens)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=lambda m, step=step: f"step {step}: {m}")


@pytest.mark.kernels
def test_the_kernels_refuse_tensors_they_cannot_read_naming_the_argument():
    kernels = require_kernels()
    with pytest.raises(RuntimeError, match="hidden must be a contiguous float32"):
        kernels.add_rms_norm(torch.randn(4, 3).T, None, torch.randn(3), 1e-5)
    with pytest.raises(RuntimeError, match=r"qkv .* must be \[\(H \+ 2 KV\) \* D, B\]"):
        kernels.decode_attention(torch.randn(10, 2), torch.zeros(2, 1, 4, 8), torch.zeros(2, 1, 8, 4),
                                 torch.zeros(8, 4), torch.zeros(8, 4), torch.zeros(2, dtype=torch.long),
                                 torch.zeros(2, 8, dtype=torch.bool), 2, 0, 0.5)
    with pytest.raises(RuntimeError, match="position 9 outside the RoPE table"):
        kernels.decode_attention(torch.randn(16, 2), torch.zeros(2, 1, 4, 8), torch.zeros(2, 1, 8, 4),
                                 torch.zeros(8, 4), torch.zeros(8, 4), torch.tensor([0, 9]),
                                 torch.zeros(2, 8, dtype=torch.bool), 2, 0, 0.5)
    with pytest.raises(RuntimeError, match=r"token id 7 outside \[0, 5\)"):
        kernels.embed(torch.randn(5, 3), torch.tensor([1, 7]))


def test_without_a_compiler_the_engine_says_why_and_decodes_with_torch_ops(tmp_path, monkeypatch):
    import torch.utils.cpp_extension

    def no_ninja(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(decode_kernels, "_loaded", None)
    monkeypatch.setattr(decode_kernels, "_failure", None)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", no_ninja)
    model_dir = make_model(tmp_path)
    with pytest.warns(UserWarning, match=r"could not be built \(RuntimeError: Ninja is required.*torch ops instead"):
        engine = TorchEngine(EngineSpec(str(model_dir)))
    assert engine.decoder.kernels is None and "Ninja" in decode_kernels.failure()
    samples = engine.generate(PROMPTS, SamplingSettings(max_new_tokens=8, n=2, seed=0))
    for ref, ours in reference_logprobs(model_dir, PROMPTS, samples):
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)


@pytest.mark.cli
def test_a_killed_build_leaves_nothing_that_blocks_the_next_load(tmp_path):
    """torch's build lock, as a build killed mid-way leaves it: the next load must not wait on it forever (a CI
    run hung there)."""
    if decode_kernels.load() is None:
        pytest.skip(f"no compiler here: {decode_kernels.failure()}")
    built = Path(decode_kernels.load().__file__).parent
    cache = tmp_path / "extensions"
    shutil.copytree(built, cache / built.name)
    (cache / built.name / "lock").write_text("")  # left by the killed build
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(cache))
    cmd = [sys.executable, "-m", "pipeline.rl.decode_kernels"]
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=Path(__file__).parents[1])
    except subprocess.TimeoutExpired:
        pytest.fail("the load waited on a stale build lock")
    assert done.returncode == 0 and "ready" in done.stdout, done.stdout + done.stderr



def test_kernels_build_with_the_interpreters_ninja_whatever_ninja_comes_first_on_path(tmp_path, monkeypatch):
    """ninja versions hash build commands differently: the install step's build (one PATH) was rebuilt, 40 s, by the
    first job with another ninja first on its PATH. The pip-installed ninja beside the interpreter is always used."""
    interpreter_bin = tmp_path / "venv" / "bin"
    other_bin = tmp_path / "usr" / "bin"
    for directory in (interpreter_bin, other_bin):
        directory.mkdir(parents=True)
        (directory / "ninja").write_text("#!/bin/sh\n")
        (directory / "ninja").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(interpreter_bin / "python"))
    monkeypatch.setenv("PATH", f"{other_bin}{os.pathsep}/bin")
    decode_kernels._put_interpreter_bin_on_path()
    assert shutil.which("ninja") == str(interpreter_bin / "ninja")
    decode_kernels._put_interpreter_bin_on_path()
    assert os.environ["PATH"].count(str(interpreter_bin)) == 1  # once, however often loads happen
