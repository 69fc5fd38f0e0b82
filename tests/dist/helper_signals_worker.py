"""A rank with the helper processes of a real run: Megatron's checkpoint writer (started by a first save) and the
reward grader's workers. Prints their pids, waits for the exit signal (the test sends TERM to every process, as
SLURM does to a job step), then saves a checkpoint and grades an answer through the same helpers, and waits to
be killed (its helpers must die with it).

    python helper_signals_worker.py OUT_DIR
"""

import json
import sys
import time
from pathlib import Path


def main():
    out = Path(sys.argv[1])
    import torch
    from megatron.core.dist_checkpointing import ShardedTensor
    from transformers import LlamaConfig

    from megatron_ext.checkpoint import save_checkpoint, start_writer_helper
    from megatron_ext.distributed import init_distributed
    from pipeline.rl.reward import RewardGrader
    from pipeline.signals import ExitSignalHandler

    init_distributed()
    handler = ExitSignalHandler()
    grader = RewardGrader(num_workers=1).start()
    hf_config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                            vocab_size=128)

    def state(value: float) -> dict:
        return {"w": ShardedTensor.from_rank_offsets("w", torch.full((4,), value), replica_id=0)}

    save_checkpoint(out, 1, state(1.0), hf_config=hf_config)
    print(json.dumps({"writer_helper": start_writer_helper(), "graders": grader.worker_pids(include_standby=True)}),
          flush=True)
    while handler.received is None:
        time.sleep(0.05)
    time.sleep(1.0)  # the test signals the helpers right after this process
    saved = save_checkpoint(out, 2, state(2.0), hf_config=hf_config)
    rewards, stats = grader.grade_batch(["\\boxed{1/2}"], ["0.5"], "qwen_math")  # graded by sympy, in a worker
    print(json.dumps({"signal": handler.received, "saved": str(saved), "reward": rewards[0],
                      "worker_restarts": stats["worker_restarts"], "writer_helper": start_writer_helper(),
                      "graders": grader.worker_pids(include_standby=True)}), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
