"""Stage two: Dr. GRPO from the stage-one model (R1-Zero style, arXiv 2503.20783), SPMD on every rank.

    torchrun --nproc_per_node 2 -m pipeline.rl --config rl.json [field=value ...]

Every rank holds its Megatron shard of the policy and a colocated rollout engine. One step:
questions -> template -> G samples each -> reward -> advantages -> learner update -> weight sync -> metrics.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from megatron_ext.checkpoint import RUN_DONE_FILE
from megatron_ext.distributed import any_rank, set_cpu_threads, sum_over_ranks
from pipeline.rl.config import RLConfig
from pipeline.rl.engine import EngineSpec, SamplingSettings, build_engine, context_length
from pipeline.rl.rollout import Rollout, all_gather_rollouts, build_policy_batch, rank_share, step_question_ids


def run_rl(cfg: RLConfig) -> Path:
    from data_prep.templates import get_template
    from megatron_ext.checkpoint import (find_latest_checkpoint, load_checkpoint, save_checkpoint,
                                         validate_checkpoint_dir)
    from megatron_ext.distributed import init_distributed
    from megatron_ext.weights import save_hf_checkpoint
    from pipeline.metrics import MetricsWriter
    from pipeline.rl.learner import Learner
    from pipeline.rl.loss import group_advantages
    from pipeline.rl.reward import RewardGrader
    from pipeline.rl.stats import LearningSignalWatch, rollout_metrics
    from pipeline.signals import ExitSignalHandler

    cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
    if cfg.ablation() and int(os.environ.get("RANK", "0")) == 0:
        print(f"[rl] note: {cfg.ablation()}", flush=True)
    out = Path(cfg.output_dir)
    finished = _finished_steps(out)
    if finished >= cfg.steps:  # finished earlier (e.g. a requeued SLURM job): nothing to do
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"[rl] {out} already finished ({finished} steps): nothing to do; raise steps to continue it")
        return out / "hf"
    resume = validate_checkpoint_dir(cfg.resume_from) if cfg.resume_from else find_latest_checkpoint(out / "checkpoints")
    if (out / "rl_config.json").exists() and resume is not None:
        changed = cfg.resume_changes(json.loads((out / "rl_config.json").read_text()))
        if changed:
            raise ValueError(f"{out} holds a run with other settings ({'; '.join(changed)}): resuming it with these "
                             "would mix two runs. Restore them, or give a new output_dir")
    template = get_template(cfg.template)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_dir)
    prompt_options = dict(max_prompt_tokens=cfg.max_prompt_tokens, system_prompt=cfg.system_prompt)
    train_qs = _load_prompts(cfg.train_questions, cfg.train_levels, template, tokenizer, **prompt_options)
    test_qs = _load_prompts(cfg.test_questions, (), template, tokenizer, **prompt_options) if cfg.test_questions else []
    if cfg.eval_max_questions:
        test_qs = test_qs[: cfg.eval_max_questions]

    set_cpu_threads(cfg.threads_per_rank)
    layout = init_distributed(tp=cfg.tp, pp=cfg.pp, seed=cfg.seed)
    exit_handler = ExitSignalHandler()
    learner = Learner(cfg, layout, cfg.model_dir)
    engine = build_engine(cfg.engine, EngineSpec(cfg.model_dir, seed=cfg.seed + layout.rank,
                                                             max_model_len=context_length(cfg.max_prompt_tokens, cfg.max_new_tokens),
                                                             options=cfg.engine_options))
    start_step = 0
    if resume is not None:
        state, trainer_state = load_checkpoint(resume, learner.sharded_state_dict(is_loading=True))
        learner.load_state_dict(state)
        start_step = trainer_state["step"]
        engine.update_weights(learner.export_weights())
        if layout.is_main:
            print(f"[rl] resuming from the checkpoint of step {start_step}: {resume}", flush=True)
    metrics = MetricsWriter(out, enabled=layout.is_main, resume_step=start_step + 1, wandb=cfg.wandb,
                            run_config=dataclasses.asdict(cfg))
    if layout.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "rl_config.json").write_text(cfg.to_json())
        _truncate_generations(out / "generations.jsonl", start_step)
    grader = RewardGrader(num_workers=cfg.grader_workers, timeout_s=cfg.grade_timeout_s, verifier=cfg.verifier)
    sampling = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                    stop=template.stop, n=cfg.group_size)
    progress = _progress(layout.is_main, start_step, cfg.steps)
    deadline = time.time() + cfg.exit_duration_min * 60 if cfg.exit_duration_min else None
    signal_watch = LearningSignalWatch(patience=3, template=cfg.template, max_new_tokens=cfg.max_new_tokens)

    if start_step == 0 and test_qs:
        metrics.log(0, _evaluate(engine, grader, test_qs, template, cfg, layout))
    step = start_step
    while step < cfg.steps:
        timings = {}
        t0 = time.perf_counter()
        question_ids = step_question_ids(len(train_qs), cfg.questions_per_step, step, cfg.seed)
        mine = rank_share(question_ids, layout.rank, layout.world_size)
        engine.wake_up()
        samples = engine.generate([train_qs[q]["prompt_ids"] for q in mine],
                                     SamplingSettings(**sampling, seed=_seed(cfg.seed, step, layout.rank)))
        local = [Rollout(q, train_qs[q]["prompt_ids"], s.token_ids, s.logprobs, s.finish_reason, s.text)
                 for q, group in zip(mine, samples) for s in group]
        timings["time/generate_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rewards, grade_stats = grader.grade_batch([r.text for r in local], [train_qs[r.question_id]["answer"] for r in local],
                                                  cfg.template, [r.truncated for r in local])
        for r, reward in zip(local, rewards):
            r.reward = reward
        rollouts = all_gather_rollouts(local)
        rewards_B = torch.tensor([r.reward for r in rollouts])
        adv_B = group_advantages(rewards_B, cfg.group_size, std_normalize=cfg.std_normalize)
        timings["time/reward_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        engine.sleep()
        batch = build_policy_batch(rollouts, adv_B, tokenizer.pad_token_id or 0)
        per_dp = batch.size // layout.dp
        train_metrics = learner.update(batch.rows(slice(layout.dp_rank * per_dp, (layout.dp_rank + 1) * per_dp)),
                                      num_responses_global=batch.size, num_tokens_global=int(batch.response_mask_BS.sum()))
        timings["time/train_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        engine.wake_up()
        engine.update_weights(learner.export_weights())
        timings["time/sync_s"] = time.perf_counter() - t0
        step += 1

        failures, no_answer = sum_over_ranks([grade_stats.get("grading_failures", 0)
                                              + grade_stats.get("grading_timeouts", 0), grade_stats.get("no_answer", 0)])
        record = {**rollout_metrics(rollouts, cfg.group_size), **train_metrics, **timings,
                  "rollout/grading_failures": failures, "rollout/no_answer_rate": no_answer / len(rollouts)}
        if test_qs and (step == cfg.steps or cfg.eval_every and step % cfg.eval_every == 0):
            record.update(_evaluate(engine, grader, test_qs, template, cfg, layout))
        metrics.log(step, record)
        if layout.is_main:
            _log_generations(out / "generations.jsonl", rollouts, train_qs, cfg, step)
            if (warning := signal_watch.update(step, record)) is not None:
                progress.write(warning)
            progress.update(1)
            progress.set_postfix(reward=f"{record['rollout/reward_mean']:.3f}", len=f"{record['rollout/response_len_mean']:.0f}")
        stop_now = exit_handler.should_exit() or (deadline is not None and any_rank(time.time() > deadline))
        if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop_now:
            save_checkpoint(out / "checkpoints", step, learner.sharded_state_dict(), hf_config=unwrap_hf_config(learner),
                            tokenizer_dir=cfg.model_dir, trainer_state={"step": step}, keep_last=cfg.keep_checkpoints)
        if stop_now and step < cfg.steps:
            if layout.is_main:
                print(f"[rl] exit requested: checkpoint at step {step} saved, exiting cleanly", flush=True)
            grader.close()
            metrics.close()
            return out / "checkpoints"
    save_hf_checkpoint(learner.model, out / "hf", tokenizer_dir=cfg.model_dir, dtype=torch.float32)
    if layout.is_main:
        (out / RUN_DONE_FILE).write_text(f"{step}\n")
        print(f"[rl] done: {step} steps. metrics: {out / 'metrics.jsonl'}  model: {out / 'hf'}", flush=True)
    grader.close()
    metrics.close()
    return out / "hf"


# ---- helpers ------------------------------------------------------------------------------------------------


def unwrap_hf_config(learner):
    from megatron_ext.models import unwrap_model

    return unwrap_model(learner.model).hf_config


def _seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 997 + rank) % (2**31 - 1)


def _finished_steps(out: Path) -> int:
    """Steps of a finished run in `out` (its DONE marker and final model), 0 if none. A larger `steps` continues it
    from its last checkpoint."""
    if not ((out / "hf" / "config.json").exists() and (out / RUN_DONE_FILE).exists()):
        return 0
    try:
        return int((out / RUN_DONE_FILE).read_text().split()[0])
    except (ValueError, IndexError):
        return 0


def _load_prompts(spec: str, levels, template, tokenizer, max_prompt_tokens: int, system_prompt: str = "") -> list[dict]:
    from data_prep.questions import load_questions_spec

    questions = load_questions_spec(spec, levels=levels or None)
    prompts = []
    for q in questions:
        ids = tokenizer(template.format(q.question, tokenizer, system_prompt), add_special_tokens=True)["input_ids"]
        if len(ids) <= max_prompt_tokens:
            prompts.append({"question": q.question, "answer": q.answer, "prompt_ids": ids})
    if not prompts:
        raise ValueError(f"no usable questions in {spec!r}: all {len(questions)} are longer than "
                         f"max_prompt_tokens={max_prompt_tokens} once templated; raise max_prompt_tokens")
    if len(prompts) < len(questions) and int(os.environ.get("RANK", "0")) == 0:
        print(f"[rl] {spec}: {len(questions) - len(prompts)} of {len(questions)} questions are longer than "
              f"max_prompt_tokens={max_prompt_tokens} once templated and are left out", flush=True)
    return prompts


def _evaluate(engine, grader, test_qs, template, cfg, layout) -> dict:
    """Greedy accuracy on the held-out questions, each rank grading its share. A response cut at the budget is
    graded like any other, as the authors' evaluation and `pipeline.eval run` do (training rewards give it 0), and
    with the run's own verifier (as oat's in-training evaluation), so eval/accuracy is the number
    `pipeline.eval run --verifier <the run's verifier>` reports for the same checkpoint, questions and budget."""
    ids = list(range(len(test_qs)))
    per = -(-len(ids) // layout.world_size)
    mine = ids[layout.rank * per : (layout.rank + 1) * per]
    samples = engine.generate([test_qs[i]["prompt_ids"] for i in mine],
                                 SamplingSettings(max_new_tokens=cfg.max_new_tokens, temperature=0.0, stop=template.stop))
    flat = [g[0] for g in samples]
    rewards, _ = grader.grade_batch([s.text for s in flat], [test_qs[i]["answer"] for i in mine], cfg.template,
                                    [False] * len(flat))
    correct, length, truncated, n = sum_over_ranks(
        [sum(rewards), sum(len(s.token_ids) for s in flat), sum(s.truncated for s in flat), len(flat)])
    n = max(n, 1.0)
    return {"eval/accuracy": correct / n, "eval/response_len_mean": length / n, "eval/truncation_rate": truncated / n}


def _log_generations(path: Path, rollouts: list[Rollout], qs: list[dict], cfg: RLConfig, step: int) -> None:
    chosen = rollouts if cfg.log_generations < 0 else rollouts[: cfg.log_generations]
    with path.open("a") as f:
        for r in chosen:
            f.write(json.dumps({"step": step, "question_id": r.question_id, "question": qs[r.question_id]["question"],
                                "gold": qs[r.question_id]["answer"], "response": r.text, "reward": r.reward,
                                "num_tokens": len(r.response_ids), "truncated": r.truncated,
                                "template": cfg.template}) + "\n")


def _truncate_generations(path: Path, start_step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= start_step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _progress(enabled: bool, start: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="Dr. GRPO", disable=not enabled, dynamic_ncols=True)
