"""torchrun worker: the RL update in megatron_ext.shared_prefix's layout (each group's prompt once) against the
one-row-per-response layout, same weights and rollouts: metrics and every gradient, on-policy and with PPO
epochs + a KL reference (TP=tp, PP=pp)."""

import json
import sys
from pathlib import Path

import torch


def main():
    model_dir, out_dir, tp, pp = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from megatron_ext import shared_prefix
    from megatron_ext.distributed import init_distributed
    from pipeline.rl.config import RLConfig
    from pipeline.rl.learner import Learner
    from dist.rollout_fixtures import mixed_length_batch

    layout = init_distributed(tp=tp, pp=pp)
    batch = mixed_length_batch()
    calls = {"n": 0}
    attention = shared_prefix.attention

    def counted(*args, **kwargs):
        calls["n"] += 1
        return attention(*args, **kwargs)

    shared_prefix.attention = counted
    result = {}
    for name, extra in (("on_policy", {}), ("ppo_kl", {"ppo_epochs": 2, "kl_coef": 0.05})):
        runs = {}
        for shared in (False, True):
            cfg = RLConfig(model_dir=model_dir, train_questions="unused", lr=1e-3, max_new_tokens=16, group_size=3,
                           micro_batch_size=3, bf16=False, tp=tp, pp=pp, shared_prompt_update=shared,
                           **{"minibatches_per_step": 1, **extra})
            learner = Learner(cfg, layout, model_dir)
            calls["n"] = 0
            metrics = learner.update(batch, num_responses_global=batch.size,
                                    num_tokens_global=int(batch.response_mask_BS.sum()))
            grads = torch.cat([p.main_grad.flatten() for p in learner.model.parameters()])
            runs[shared] = (metrics, grads, calls["n"], learner._shared_prompt_microbatches(batch) is not None)
        (m0, g0, _, _), (m1, g1, n1, used) = runs[False], runs[True]
        result[name] = {
            "metrics": m0, "metric_diffs": {k: abs(m0[k] - m1[k]) for k in m0},
            "grad_rel_diff": ((g0 - g1).abs().max() / g0.abs().max()).item(), "grad_scale": g0.abs().max().item(),
            "shared_layout_used": used, "shared_attention_calls": n1, "plain_attention_calls": runs[False][2],
        }
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
