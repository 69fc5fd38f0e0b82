"""torchrun worker: the stage-two learner's update where the model's device is not the host's, when
MEGATRON_EXT_SIMULATED_ACCELERATOR=1 (megatron_ext.simulated_accelerator: a tensor left on the host fails as on
CUDA; collectives on the default group refuse host tensors as NCCL does). Without it the same code runs on the CPU:
the test compares the two. Cases: on-policy shared-prompt update; per-response rows; two minibatches with PPO epochs,
a KL reference and engine behaviour log-probs (TP=tp, PP=pp, DP = world / (tp * pp))."""

import json
import sys
from pathlib import Path

import torch

CASES = {
    "shared_prompt_on_policy": {},
    "per_response_rows": {"shared_prompt_update": False},
    "minibatches_ppo_kl": {"minibatches_per_step": 2, "ppo_epochs": 2, "kl_coef": 0.05},
    "engine_logprobs": {"behaviour_logprobs": "engine", "minibatches_per_step": 2},
}


def main():
    model_dir, out_dir, tp, pp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from megatron_ext.distributed import init_distributed
    from pipeline.rl.config import RLConfig
    from pipeline.rl.learner import Learner
    from pipeline.rl.rollout import Rollout, build_policy_batch

    layout = init_distributed(tp=tp, pp=pp)
    g = torch.Generator().manual_seed(5)
    rollouts = []
    for q, prompt_len in enumerate([5, 2, 7, 4]):  # 4 groups of 2: prompts of different lengths, responses 1..12
        prompt = torch.randint(2, 250, (prompt_len,), generator=g).tolist()
        for n in ([1, 12], [4, 9], [7, 3], [5, 5])[q]:
            rollouts.append(Rollout(q, prompt, torch.randint(2, 250, (n,), generator=g).tolist(),
                                    (-torch.rand(n, generator=g) * 3).tolist(), "stop", ""))
    full = build_policy_batch(rollouts, torch.randn(len(rollouts), generator=g), 0)
    per_dp = full.size // layout.dp
    batch = full.rows(slice(layout.dp_rank * per_dp, (layout.dp_rank + 1) * per_dp))
    result = {"device": str(layout.device)}
    for name, extra in CASES.items():
        cfg = RLConfig(model_dir=model_dir, train_questions="unused", lr=1e-3, max_new_tokens=16, group_size=2,
                       micro_batch_size=2, bf16=False, tp=tp, pp=pp, **{"minibatches_per_step": 1, **extra})
        learner = Learner(cfg, layout, model_dir)
        metrics = learner.update(batch, num_responses_global=full.size,
                                num_tokens_global=int(full.response_mask_BS.sum()))
        logp = learner.logprobs(batch)
        result[name] = {
            "metrics": metrics,
            "params_device": sorted({str(p.device) for p in learner.model.parameters()}),
            "param_sums": [p.detach().double().sum().item() for p in learner.model.parameters()],
            "logp_sum": None if logp is None else (logp * batch.response_mask_BS.to(logp.device)).sum().item(),
        }
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
