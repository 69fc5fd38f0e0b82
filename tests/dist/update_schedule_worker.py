"""torchrun worker (1 rank): the learner's update with 1 and 8 optimizer steps per rollout (and 8 with truncated
importance sampling, cap 1.2 < e^0.3), on one batch whose engine log-probs are the learner's minus 0.3 on every other
token."""

import json
import sys
from pathlib import Path

import torch


def main():
    model_dir, out_dir = sys.argv[1], Path(sys.argv[2])
    from megatron_ext.distributed import init_distributed
    from pipeline.rl.config import RLConfig
    from pipeline.rl.learner import Learner
    from pipeline.rl.rollout import Rollout, build_policy_batch

    layout = init_distributed()
    g = torch.Generator().manual_seed(3)
    rollouts = []
    for q in range(8):  # 8 questions x 2 responses: one minibatch of 2 rows per optimizer step at 8 minibatches
        prompt = torch.randint(2, 250, (4,), generator=g).tolist()
        for _ in range(2):
            rollouts.append(Rollout(q, prompt, torch.randint(2, 250, (6,), generator=g).tolist(), [0.0] * 6, "stop", ""))
    batch = build_policy_batch(rollouts, torch.tensor([1.0, -1.0] * 8), 0)
    result = {}
    for name, extra in (("minibatches_1", {"minibatches_per_step": 1}), ("minibatches_8", {"minibatches_per_step": 8}),
                        ("minibatches_8_tis", {"minibatches_per_step": 8, "tis_cap": 1.2})):
        cfg = RLConfig(model_dir=model_dir, train_questions="unused", lr=3e-2, max_new_tokens=8, group_size=2,
                       micro_batch_size=2, bf16=False, **extra)
        learner = Learner(cfg, layout, model_dir)
        learner_logp = learner.logprobs(batch)
        offset = torch.zeros_like(learner_logp)
        offset[:, ::2] = 0.3
        batch.engine_logp_BS = torch.where(batch.response_mask_BS, learner_logp - offset, 0.0)
        result[name] = learner.update(batch, num_responses_global=batch.size,
                                     num_tokens_global=int(batch.response_mask_BS.sum()))
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
