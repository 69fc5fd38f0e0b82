"""Stage one's pieces in one process: config (defaults, overrides, validation with the fix in the message),
model presets, the LR schedule, blends, the micro-batch split, EOD loss masking, FLOP counting, exit signals."""

from __future__ import annotations

import ast
import inspect
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from dist.pretrain_fixtures import REPO, env, make_math_corpus, tiny_run_config


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_math_corpus(tmp_path_factory.mktemp("corpus"), num_docs=400)


def _cfg(corpus, tmp_path, **sections):
    from pipeline.pretrain_config import PretrainConfig

    return PretrainConfig.from_dict(tiny_run_config(corpus, tmp_path / "run", **sections))


# ---- config ------------------------------------------------------------------------------------------------


def test_every_config_field_has_a_docstring():
    import pipeline.optim
    import pipeline.pretrain_config

    for module in (pipeline.pretrain_config, pipeline.optim):
        for node in ast.parse(inspect.getsource(module)).body:
            if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "ResolvedModel":
                body = node.body
                for i, stmt in enumerate(body):
                    if isinstance(stmt, ast.AnnAssign):
                        nxt = body[i + 1] if i + 1 < len(body) else None
                        documented = isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant)
                        assert documented, f"{node.name}.{stmt.target.id} has no docstring"


def test_defaults_round_trip_through_json():
    from pipeline.pretrain_config import PretrainConfig

    cfg = PretrainConfig()
    assert PretrainConfig.from_dict(json.loads(cfg.to_json())) == cfg


def test_dotted_overrides_parse_json_values():
    from pipeline.pretrain_config import PretrainConfig

    cfg = PretrainConfig().with_overrides(["schedule.train_iters=7", 'data.blend=["a", "b"]', "optim.lr=2e-4",
                                           "model.overrides.num_hidden_layers=2", "output_dir=/x/y",
                                           "data.eod_mask_loss=false"])
    assert cfg.schedule.train_iters == 7 and cfg.data.blend == ["a", "b"] and cfg.optim.lr == 2e-4
    assert cfg.model.overrides == {"num_hidden_layers": 2} and cfg.output_dir == "/x/y"
    assert cfg.data.eod_mask_loss is False


@pytest.mark.parametrize("override,message", [
    ("schedule.train_iter=5", r"unknown config field\(s\) \['schedule.train_iter'\] \(did you mean 'train_iters'\?\); valid in schedule: .*'train_iters'"),
    ("schedule.train_iters=abc", r"schedule.train_iters='abc' must be a whole number"),
    ("optimizer.lr=1", r"unknown config field\(s\) \['optimizer'\] \(did you mean 'optim'\?\)"),
    ("output_dir.x=1", r"override 'output_dir.x': 'output_dir' is not a config section; sections: \['model', 'data'"),
    ("data.eod_mask_loss=yes", r"data.eod_mask_loss='yes' must be true or false"),
    ("schedule.train_iters=0", r"schedule.train_iters=0 must be >= 1"),
    ("train_iters", r"is not name=value or section.name=value"),
])
def test_bad_overrides_name_the_field(override, message):
    from pipeline.pretrain_config import PretrainConfig

    with pytest.raises(ValueError, match=message):
        PretrainConfig().with_overrides([override]).validate(1)  # ranges: checked first by validate


@pytest.mark.parametrize("sections,world,message", [
    (dict(schedule={"global_batch_size": 12, "micro_batch_size": 4}), 2,
     r"schedule.global_batch_size=12 is not divisible by schedule.micro_batch_size x data-parallel size = 4 x 2 = 8.*"
     r"set global_batch_size to 8 or 16"),
    (dict(parallel={"tp": 4}), 4, r"parallel.tp=4 .*does not divide num_key_value_heads=2: use a tensor_parallel "
                                  r"size among \[1, 2\]"),
    (dict(parallel={"pp": 3}), 3, r"pipeline_parallel=3 does not divide num_hidden_layers=2: use one of \[1, 2\]"),
    (dict(parallel={"tp": 2}), 3, r"world size 3 is not divisible by tensor_parallel x pipeline_parallel = 2 x 1; "
                                  r"launch a multiple of 2 processes"),
    (dict(data={"blend": []}), 1, r"data.blend is empty"),
    (dict(data={"blend": ["/nowhere/corpus"]}), 1, r"data.blend: /nowhere/corpus.bin does not exist"),
    (dict(data={"split": "100,0,0"}), 1, r"data.split='100,0,0' leaves no validation documents"),
    (dict(model={"tokenizer_dir": ""}), 1, r"model.tokenizer_dir is empty"),
    (dict(model={"hf_dir": "/nowhere"}), 1, r"model.hf_dir='/nowhere' is not a Hugging Face model directory"),
    (dict(model={"preset": "gpt9"}), 1, r"unknown model preset 'gpt9'; valid presets: \['llama3.2-3b', 'qwen2.5-1.5b', .*'tiny'"),
    (dict(optim={"warmup_iters": 6}), 1, r"optim.warmup_iters=6 must be >= 0 and below the decay length \(6 steps"),
    (dict(optim={"decay_style": "step"}), 1, r"optim.decay_style='step'; valid: \['cosine', 'linear', 'constant'\]"),
    (dict(optim={"min_lr": 1.0}), 1, r"optim.min_lr=1.0 must be in \[0, optim.lr=0.003\]"),
    (dict(checkpoint={"resume_from": "/nowhere/iter_0000010"}), 1, r"checkpoint.resume_from=.* does not exist"),
    (dict(data={"seq_length": 200000}), 1, r"data.seq_length=200000 exceeds the model's max_position_embeddings"),
])
def test_bad_configs_fail_validation_with_the_fix(corpus, tmp_path, sections, world, message):
    with pytest.raises(ValueError, match=message):
        _cfg(corpus, tmp_path, **sections).validate(world)


def test_continuing_a_pretrained_model_with_the_from_scratch_optimizer_defaults_is_refused(corpus, tmp_path):
    from pipeline.optim import OptimConfig

    cfg = _cfg(corpus, tmp_path, model={"hf_dir": "/models/SmolLM2-135M-Instruct"})
    cfg.optim = OptimConfig()
    with pytest.raises(ValueError, match=r"optim.\* are all the defaults for training from random init \(lr 0.001.*"
                                         r"set a continued-pretraining schedule, e.g. optim.lr=1e-4"):
        cfg.validate(1)
    cfg.optim.lr, cfg.optim.warmup_iters = 1e-4, 1  # a deliberate schedule goes on to the next checks
    with pytest.raises(ValueError, match="is not a Hugging Face model directory"):
        cfg.validate(1)


def test_documents_are_separated_by_the_token_the_data_recorded(corpus, tmp_path):
    import shutil

    prefix = tmp_path / "copy" / "math"
    prefix.parent.mkdir()
    for suffix in (".bin", ".idx"):
        shutil.copy(corpus["prefix"] + suffix, str(prefix) + suffix)
    assert _cfg(corpus, tmp_path, data={"blend": [str(prefix)]}).validate(1).eod_token_id == corpus["eos"]
    (tmp_path / "copy" / "math.summary.json").write_text(json.dumps({"tokenizer": {"eod_id": 7}}))
    assert _cfg(corpus, tmp_path, data={"blend": [str(prefix)]}).validate(1).eod_token_id == 7
    other = tmp_path / "other" / "math"
    other.parent.mkdir()
    for suffix in (".bin", ".idx"):
        shutil.copy(corpus["prefix"] + suffix, str(other) + suffix)
    (tmp_path / "other" / "math.summary.json").write_text(json.dumps({"tokenizer": {"eod_id": 9}}))
    with pytest.raises(ValueError, match="end documents with different tokens"):
        _cfg(corpus, tmp_path, data={"blend": [str(prefix), str(other)]}).validate(1)
    for directory, sha in (("copy", "a" * 64), ("other", "b" * 64)):
        (tmp_path / directory / "math.summary.json").write_text(json.dumps({"tokenizer": {"eod_id": 7, "sha256": sha}}))
    with pytest.raises(ValueError, match="mixes corpora tokenized with different tokenizers"):
        _cfg(corpus, tmp_path, data={"blend": [str(prefix), str(other)]}).validate(1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="bf16 is allowed on GPU")
def test_bf16_is_refused_on_cpu(corpus, tmp_path):
    with pytest.raises(ValueError, match="parallel.dtype=bfloat16 needs a GPU"):
        _cfg(corpus, tmp_path, parallel={"dtype": "bfloat16"}).validate(1)


def test_valid_config_resolves_the_tiny_model_from_the_tokenizer(corpus, tmp_path):
    resolved = _cfg(corpus, tmp_path).validate(2)
    assert resolved.hf_config.vocab_size == 256  # the 250-token tokenizer rounded up to a multiple of 128
    assert resolved.eod_token_id == corpus["eos"] == resolved.hf_config.eos_token_id


@pytest.mark.cli
def test_cli_refuses_a_bad_config_before_launching(corpus, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(tiny_run_config(corpus, tmp_path / "out")))
    proc = subprocess.run([sys.executable, "-m", "pipeline.pretrain", "--config", str(config),
                           "schedule.global_batch_size=3", "schedule.micro_batch_size=2"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: schedule.global_batch_size=3 is not divisible" in proc.stderr
    assert "set global_batch_size to 2 or 4" in proc.stderr
    assert not (tmp_path / "out").exists()


# ---- presets -----------------------------------------------------------------------------------------------


def test_llama32_3b_preset_is_the_published_config():
    from pipeline.model_presets import build_preset

    c = build_preset("llama3.2-3b")
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads) == (28, 3072, 24, 8)
    assert (c.intermediate_size, c.vocab_size, c.head_dim, c.max_position_embeddings) == (8192, 128256, 128, 131072)
    assert c.tie_word_embeddings and c.rms_norm_eps == 1e-5 and c.hidden_act == "silu"
    assert c.rope_parameters == {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def test_tiny_preset_is_llama_shaped_with_the_tokenizers_vocab(corpus):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from pipeline.model_presets import build_preset

    tok = AutoTokenizer.from_pretrained(corpus["tokenizer"])
    c = build_preset("tiny", tokenizer=tok)
    assert c.vocab_size == 256 and c.eos_token_id == tok.eos_token_id
    assert c.num_attention_heads // c.num_key_value_heads == 4 and c.tie_word_embeddings
    assert c.rope_parameters["rope_type"] == "llama3"
    big_vocab = build_preset("tiny", overrides={"vocab_size": 2048})
    n_params = sum(p.numel() for p in LlamaForCausalLM(big_vocab).parameters())
    assert 3.5e6 < n_params < 6e6
    with pytest.raises(ValueError, match=r"model.overrides has fields LlamaConfig does not know: \['hiden_size'\]"):
        build_preset("tiny", overrides={"hiden_size": 8})


# ---- optimizer schedule ------------------------------------------------------------------------------------


def _lrs(cfg, train_iters: int) -> list[float]:
    from pipeline.optim import build_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    scheduler = build_scheduler(optimizer, cfg, train_iters)
    lrs = []
    for _ in range(train_iters):
        scheduler.step(1)  # as the trainer does before each optimizer step
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_warmup_then_cosine_reaches_min_lr_at_the_last_step():
    import math

    from pipeline.optim import OptimConfig

    lrs = _lrs(OptimConfig(lr=1.0, min_lr=0.1, warmup_iters=4, decay_style="cosine"), 12)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # no step is wasted at lr 0
    assert lrs[7] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert lrs[-1] == pytest.approx(0.1)


def test_constant_schedule_after_warmup():
    from pipeline.optim import OptimConfig

    assert _lrs(OptimConfig(lr=1e-6, min_lr=0.0, warmup_iters=0, decay_style="constant"), 5) == [1e-6] * 5


# ---- data --------------------------------------------------------------------------------------------------


def test_blend_spellings(corpus):
    from megatron_ext.training import parse_blend

    p = corpus["prefix"]
    assert parse_blend([p]) == ([p], None)
    assert parse_blend(["0.3", p, "0.7", p]) == ([p, p], [0.3, 0.7])
    assert parse_blend([[1, p], [3, p]]) == ([p, p], [1.0, 3.0])
    assert parse_blend({p: 2}) == ([p], [2.0])
    with pytest.raises(ValueError, match=r"data.blend: weights \[-1.0, 1.0\] must be >= 0"):
        parse_blend(["-1", p, "1", p])
    with pytest.raises(ValueError, match="data.blend is empty or malformed"):
        parse_blend([])


def test_microbatches_follow_megatrons_sampler_order():
    from megatron_ext.training import microbatches

    dataset = [{"tokens": torch.tensor([i])} for i in range(16)]
    for rank, expected in [(0, [[8, 9], [12, 13]]), (1, [[10, 11], [14, 15]])]:
        got = microbatches(dataset, 8, micro_batch_size=2, num_microbatches=2, dp=2, dp_rank=rank)
        assert [b["tokens"].flatten().tolist() for b in got] == expected


@pytest.mark.parametrize("reset_attention_mask", [False, True])
def test_gpt_dataset_masks_the_loss_at_document_ends(corpus, tmp_path, reset_attention_mask):
    from megatron_ext.training import DatasetTokenizer, build_gpt_datasets, parse_blend

    eod = corpus["eos"]
    train, valid = build_gpt_datasets(
        blend=parse_blend([corpus["prefix"]]), valid_blend=None, split="90,10,0", seq_length=64, seed=1,
        tokenizer=DatasetTokenizer(256, eod), train_samples=20, valid_samples=4, eod_mask_loss=True,
        reset_attention_mask=reset_attention_mask, cache_dir=tmp_path / "cache")
    assert len(train) >= 20 and len(valid) >= 4
    seen_eod = 0
    for i in range(20):
        s = train[i]
        assert torch.equal(s["loss_mask"], (s["tokens"] != eod).float())  # no loss on predicting a new document
        assert torch.equal(s["tokens"][1:], s["labels"][:-1])
        seen_eod += int((s["tokens"] == eod).sum())
        if reset_attention_mask:
            mask = s["attention_mask"][0]  # True = masked (Megatron's convention)
            ends = (s["tokens"] == eod).nonzero().flatten().tolist()
            for e in ends[:1]:
                assert mask[e + 1 :, : e + 1].all() and not mask[e, : e + 1].any()
        else:
            assert "attention_mask" not in s  # causal attention comes from the kernel
    assert seen_eod > 10


def test_a_weighted_blend_samples_its_corpora_in_proportion(corpus, tmp_path):
    import shutil
    from collections import Counter

    from megatron_ext.training import DatasetTokenizer, build_gpt_datasets, parse_blend

    other = tmp_path / "other"
    for suffix in (".bin", ".idx"):
        shutil.copy(corpus["prefix"] + suffix, str(other) + suffix)
    # a blend's index cache is written by rank 0 of the (here one-rank, in-process) group
    torch.distributed.init_process_group("gloo", store=torch.distributed.FileStore(str(tmp_path / "store"), 1),
                                         rank=0, world_size=1)
    try:
        train, valid = build_gpt_datasets(
            blend=parse_blend({corpus["prefix"]: 3, str(other): 1}), valid_blend=None, split="90,10,0", seq_length=32,
            seed=7, tokenizer=DatasetTokenizer(256, corpus["eos"]), train_samples=200, valid_samples=20,
            eod_mask_loss=False, reset_attention_mask=False, cache_dir=tmp_path / "cache")
    finally:
        torch.distributed.destroy_process_group()
    assert len(train) >= 200 and len(valid) >= 20 and len(train.datasets) == 2
    counts = Counter(int(train[i]["dataset_id"]) for i in range(200))
    assert abs(counts[0] - 150) <= 3 and abs(counts[1] - 50) <= 3, counts


# ---- FLOPs and signals -------------------------------------------------------------------------------------


def test_flop_count_is_6n_plus_attention():
    from transformers import LlamaForCausalLM

    from megatron_ext.training import train_flops_per_token
    from pipeline.model_presets import build_preset

    config = build_preset("tiny", overrides={"vocab_size": 1024})
    model = LlamaForCausalLM(config)
    matmul_params = sum(p.numel() for n, p in model.named_parameters() if "norm" not in n)  # tied head counted once
    seq = 256
    attention = 6 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * (seq + 1)
    assert train_flops_per_token(config, seq) == pytest.approx(6 * matmul_params + attention, rel=1e-12)


def test_exit_signal_sets_the_flag_and_restores_handlers():
    from pipeline.signals import ExitSignalHandler

    before = signal.getsignal(signal.SIGUSR1)
    handler = ExitSignalHandler()
    try:
        assert not handler.should_exit()
        assert handler.should_exit(also=True)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert handler.should_exit() and handler.received == signal.SIGUSR1
    finally:
        handler.restore()
    assert signal.getsignal(signal.SIGUSR1) == before


@pytest.mark.cli
def test_helper_processes_survive_the_exit_signal_and_die_with_their_rank(tmp_path):
    """SLURM sends TERM to every process of a job step: the rank's checkpoint writer and grading workers must
    ignore it (the rank saves and grades through them afterwards) and must not outlive the rank."""
    import psutil

    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "dist" / "helper_signals_worker.py"),
                             str(tmp_path / "ckpt")], cwd=REPO, env=env(), stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        before = json.loads(proc.stdout.readline() or "null")
        assert before, f"the worker failed before its first checkpoint (exit code {proc.wait(60)})"
        helpers = psutil.Process(proc.pid).children(recursive=True)
        assert {before["writer_helper"], *before["graders"]} <= {p.pid for p in helpers}
        for p in [psutil.Process(proc.pid), *helpers]:
            p.send_signal(signal.SIGTERM)
        after = json.loads(proc.stdout.readline() or "null")
        assert after, f"the rank could not checkpoint after the TERM (exit code {proc.wait(60)}): see its stderr"
        assert after["signal"] == signal.SIGTERM and after["saved"].endswith("iter_0000002")
        assert (after["reward"], after["worker_restarts"]) == (1.0, 0)
        assert (after["writer_helper"], after["graders"]) == (before["writer_helper"], before["graders"])
        assert all(p.is_running() for p in helpers)
    finally:
        proc.kill()
        proc.wait(60)
    _, alive = psutil.wait_procs(helpers, timeout=30)
    assert not alive, f"helpers outlived their rank: {[(p.pid, p.cmdline()) for p in alive]}"
