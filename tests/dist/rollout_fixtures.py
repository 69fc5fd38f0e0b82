"""A policy batch for the shared-prompt layout's awkward cases, shared by the update-equivalence workers."""

import torch


def mixed_length_batch():
    """Three questions with prompts of 5, 2 and 7 tokens, three responses each of 1 to 16 tokens, random engine
    log-probs and advantages (seeded)."""
    from pipeline.rl.rollout import Rollout, build_policy_batch

    g = torch.Generator().manual_seed(5)
    rollouts = []
    for q, prompt_len in enumerate([5, 2, 7]):
        prompt = torch.randint(2, 250, (prompt_len,), generator=g).tolist()
        for n in ([1, 16, 9], [4, 12, 16], [7, 3, 11])[q]:
            rollouts.append(Rollout(q, prompt, torch.randint(2, 250, (n,), generator=g).tolist(),
                                    (-torch.rand(n, generator=g) * 3).tolist(), "stop", ""))
    return build_policy_batch(rollouts, torch.randn(len(rollouts), generator=g), 0)
