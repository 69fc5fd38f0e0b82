"""TRL's GRPOTrainer (loss_type="dr_grpo", no reward scaling, no KL) on the same tiny model, questions, group
size, batch and generation budget as bench/rl_step_throughput.py. Runs in the TRL venv (bench/setup_trl.sh):

    .venv-trl/bin/python bench/trl_grpo_step.py MODEL_DIR QUESTIONS_JSONL OUT_JSON --prompts 4 --group 8 --max-new 64 --steps 8
"""

import argparse
import json
import sys
import time
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
    args = p.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from pipeline.rl.reward import math_reward  # the same grader as ours, called in-process

    rows = [json.loads(line) for line in open(args.questions)]
    data = Dataset.from_list([{"prompt": r["question"], "gold": r["answer"]} for r in rows])

    def reward(completions, gold, **kwargs):
        return [math_reward(c, g, "none") for c, g in zip(completions, gold)]

    step_times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t0)

    cfg = GRPOConfig(
        output_dir=str(Path(args.out).parent / "trl_out"), use_cpu=True, bf16=False, fp16=False,
        loss_type="dr_grpo", scale_rewards="none", beta=0.0, num_generations=args.group,
        per_device_train_batch_size=args.prompts * args.group, gradient_accumulation_steps=1,
        max_completion_length=args.max_new, temperature=1.0, top_p=1.0, learning_rate=args.lr,
        gradient_checkpointing=False, max_steps=args.steps, logging_steps=1, save_strategy="no",
        report_to=[], seed=0, dataloader_num_workers=0,
    )
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok,
                          callbacks=[Timer()])
    trainer.train()
    Path(args.out).write_text(json.dumps({"step_s": step_times, "samples_per_step": args.prompts * args.group,
                                          "torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
