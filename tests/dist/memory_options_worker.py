"""torchrun worker: the learner's memory options (activation recomputation, chunked log-probs, micro-batches trimmed
to their own longest row) against the update without them, same weights and rollouts: every metric and every
gradient, with PPO epochs and a KL reference (TP=tp, PP=pp)."""

import json
import sys
from pathlib import Path

import torch

BASE = {"recompute": "none", "logprob_chunk_tokens": 0, "trim_microbatch_padding": False, "minibatches_per_step": 1}
OPTIONS = {
    "recompute_full": {"recompute": "full"},
    "recompute_selective": {"recompute": "selective"},
    "logprob_chunks": {"logprob_chunk_tokens": 7},
    "trim_padding": {"trim_microbatch_padding": True},
    "all": {"recompute": "full", "logprob_chunk_tokens": 5, "trim_microbatch_padding": True},
}


def main():
    model_dir, out_dir, tp, pp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from megatron_ext.distributed import init_distributed
    from pipeline.rl.config import RLConfig
    from pipeline.rl.learner import Learner
    from pipeline.rl.rollout import Rollout, build_policy_batch

    layout = init_distributed(tp=tp, pp=pp)
    g = torch.Generator().manual_seed(11)
    rollouts = []
    # micro-batches of 2 rows with very different lengths, so trimming cuts a lot from some
    for q, (prompt_len, lengths) in enumerate([(3, [2, 1]), (6, [14, 3]), (2, [1, 2]), (5, [9, 16])]):
        prompt = torch.randint(2, 250, (prompt_len,), generator=g).tolist()
        for n in lengths:
            rollouts.append(Rollout(q, prompt, torch.randint(2, 250, (n,), generator=g).tolist(),
                                    (-torch.rand(n, generator=g) * 3).tolist(), "stop", ""))
    batch = build_policy_batch(rollouts, torch.randn(len(rollouts), generator=g), 0)

    def update(options: dict):
        cfg = RLConfig(model_dir=model_dir, train_questions="unused", lr=1e-3, max_new_tokens=16, group_size=2,
                       micro_batch_size=2, bf16=False, tp=tp, pp=pp, shared_prompt_update=False, ppo_epochs=2,
                       kl_coef=0.05, temperature=0.8, **{**BASE, **options})
        learner = Learner(cfg, layout, model_dir)
        metrics = learner.update(batch, num_responses_global=batch.size,
                                num_tokens_global=int(batch.response_mask_BS.sum()))
        grads = torch.cat([p.main_grad.flatten() for p in learner.model.parameters()])
        logp = learner.logprobs(batch)
        return metrics, grads, logp

    base_metrics, base_grads, base_logp = update({})
    result = {}
    for name, options in OPTIONS.items():
        metrics, grads, logp = update(options)
        result[name] = {
            "metric_diffs": {k: abs(metrics[k] - base_metrics[k]) for k in base_metrics},
            "grad_rel_diff": ((grads - base_grads).abs().max() / base_grads.abs().max()).item(),
            "logp_max_diff": None if logp is None else ((logp - base_logp) * batch.response_mask_BS).abs().max().item(),
        }
    result["grad_scale"] = base_grads.abs().max().item()
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
