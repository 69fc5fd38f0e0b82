"""TRL's GRPOTrainer (loss_type="dr_grpo", no reward scaling, no KL) on the same tiny model, questions, group
size, batch and generation budget as bench/rl_step_throughput.py. Runs in the TRL venv (bench/setup_trl.sh):

    .venv-trl/bin/python bench/trl_grpo_step.py MODEL_DIR QUESTIONS_JSONL OUT_JSON --prompts 4 --group 8 --max-new 64 --steps 8

Matched to our step (pipeline.rl with its defaults): `per_device_train_batch_size` counts completions, so
prompts x group completions per optimizer step from one `generate` (steps_per_generation = gradient accumulation
steps, 1 unless `--micro-batch` splits the forward/backward; num_iterations = 1: no separate old-log-prob pass,
as ours); fp32 (TRL defaults to bf16), no gradient checkpointing (TRL defaults to
it), sampling at temperature 1 with no top-k / top-p; constant LR, AdamW betas (0.9, 0.95), grad clip 1.0;
the reward is our own `RewardGrader.grade_batch` over the step's completions, with a completion that hit the
token budget without EOS counted as truncated (reward 0), exactly as our controller calls it.
Writes OUT_JSON: wall seconds per step (end of one optimizer step to the end of the next), TRL's own
profiling timers per step, CPU seconds per step, completions and reward calls seen per step, versions.
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("questions")
    p.add_argument("out")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--template", default="none")
    p.add_argument("--micro-batch", type=int, default=0, help="completions per forward/backward, the rest by "
                   "gradient accumulation (one optimizer step per generate either way); 0: all at once")
    args = p.parse_args()

    from importlib import metadata

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    from data_prep.templates import get_template
    from pipeline.rl.reward import RewardGrader  # the same grader as ours, same call

    template = get_template(args.template)
    rows = [json.loads(line) for line in open(args.questions)]
    data = Dataset.from_list([{"prompt": template.format(r["question"]), "gold": r["answer"]} for r in rows])
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    eos_ids = {tok.eos_token_id, *(model.config.eos_token_id if isinstance(model.config.eos_token_id, list)
                                   else [model.config.eos_token_id])} - {None}

    grader = RewardGrader(num_workers=1, timeout_s=1.0)  # ours: grader_workers=1, grade_timeout_s=1.0 per rank
    grader.start()
    per_step = defaultdict(lambda: defaultdict(float))  # step -> timer name -> seconds (summed within the step)
    seen = defaultdict(lambda: {"completions": 0, "reward_calls": 0, "generated_tokens": 0, "truncated": 0})
    state = {"step": 0}

    def reward(completions, gold, completion_ids, **kwargs):
        truncated = [len(ids) >= args.max_new and (not ids or ids[-1] not in eos_ids) for ids in completion_ids]
        rewards, _ = grader.grade_batch(list(completions), list(gold), args.template, truncated)
        s = seen[state["step"]]
        s["completions"] += len(completions)
        s["reward_calls"] += 1
        s["generated_tokens"] += sum(len(ids) for ids in completion_ids)
        s["truncated"] += sum(truncated)
        return rewards

    original_log = profiling.ProfilingContext._log_metrics

    def log_metrics(self, duration):  # TRL's timers only reach wandb / mlflow / trackio: read them here too
        per_step[state["step"]][self.name] += duration
        return original_log(self, duration)

    profiling.ProfilingContext._log_metrics = log_metrics

    callback_s, step_end, step_cpu = [], [], []

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k):
            step_end.append(time.perf_counter())
            step_cpu.append(time.process_time())

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            callback_s.append(now - self.t0)
            step_end.append(now)
            step_cpu.append(time.process_time())  # this process, all threads
            state["step"] += 1

    micro = args.micro_batch or args.prompts * args.group
    if micro < 0 or (args.prompts * args.group) % micro:
        raise SystemExit(f"--micro-batch {micro} must divide prompts x group = {args.prompts * args.group}")
    accumulation = args.prompts * args.group // micro
    cfg = GRPOConfig(
        output_dir=str(Path(args.out).parent / "trl_out"), use_cpu=True, bf16=False, fp16=False,
        loss_type="dr_grpo", scale_rewards="none", beta=0.0, num_generations=args.group,
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation, num_iterations=1, max_completion_length=args.max_new,
        temperature=1.0, top_p=1.0, top_k=0, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.0, max_grad_norm=1.0,
        gradient_checkpointing=False, mask_truncated_completions=False, max_steps=args.steps, logging_steps=1,
        save_strategy="no", report_to=[], seed=0, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok,
                          callbacks=[Timer()])
    try:
        trainer.train()
    finally:
        grader.close()
    versions = {}
    for pkg in ("trl", "transformers", "torch", "accelerate", "datasets"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    Path(args.out).write_text(json.dumps({
        "step_s": [b - a for a, b in zip(step_end, step_end[1:])],
        "callback_step_s": callback_s,
        "cpu_s": [b - a for a, b in zip(step_cpu, step_cpu[1:])],
        "timers_per_step": [dict(per_step[i]) for i in range(len(callback_s))],
        "seen_per_step": [dict(seen[i]) for i in range(len(callback_s))],
        "samples_per_step": args.prompts * args.group,
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "config": {k: getattr(cfg, k) for k in ("loss_type", "scale_rewards", "beta", "num_generations",
                                                "per_device_train_batch_size", "gradient_accumulation_steps",
                                                "steps_per_generation",
                                                "num_iterations", "max_completion_length", "bf16",
                                                "gradient_checkpointing", "temperature", "top_p", "top_k")},
    }))


if __name__ == "__main__":
    main()
