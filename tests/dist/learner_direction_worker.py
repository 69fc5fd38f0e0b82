"""torchrun worker: PPO updates move each response's log-prob in the direction of its advantage (TP=tp)."""

import json
import sys
from pathlib import Path

import torch


def main():
    model_dir, out_dir, tp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    from megatron_ext.distributed import init_distributed
    from pipeline.rl.config import RLConfig
    from pipeline.rl.learner import Learner
    from pipeline.rl.rollout import Rollout, build_policy_batch

    layout = init_distributed(tp=tp)
    cfg = RLConfig(model_dir=model_dir, train_questions="unused", lr=1e-4, max_new_tokens=16, micro_batch_size=2,
                   minibatches_per_step=1, bf16=False, tp=tp)
    learner = Learner(cfg, layout, model_dir)
    prompt = [5, 6, 7, 8]
    rollouts = [Rollout(0, prompt, [10, 11, 12], [0.0] * 3, "stop", ""), Rollout(0, prompt, [20, 21, 22], [0.0] * 3, "stop", ""),
                Rollout(1, prompt, [30, 31], [0.0] * 2, "stop", ""), Rollout(1, prompt, [40, 41], [0.0] * 2, "stop", "")]
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    batch = build_policy_batch(rollouts, adv, 0)

    def sequence_logp():
        return (learner.logprobs(batch) * batch.response_mask_BS).sum(1)

    before = sequence_logp()
    for _ in range(3):
        metrics = learner.update(batch, num_responses_global=4, num_tokens_global=int(batch.response_mask_BS.sum()))
    delta = (sequence_logp() - before).tolist()
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps({"delta": delta, "adv": adv.tolist(), "metrics": metrics}))


if __name__ == "__main__":
    main()
