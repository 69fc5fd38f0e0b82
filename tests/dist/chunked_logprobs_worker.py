"""torchrun worker (2 ranks, TP=2): `vocab_parallel_logprobs_and_entropy_chunked` on each rank's vocabulary shard of
the same full logits, against the unchunked TP=2 `vocab_parallel_logprobs_and_entropy` and (rank 0) a full-vocabulary
fp32 reference on the host. Max abs differences per case go to rank{r}.json for tests/test_chunked_logprobs.py.
With MEGATRON_EXT_SIMULATED_ACCELERATOR=1 the logits live on the simulated device, which refuses host tensors."""

import json
import sys
from pathlib import Path

import torch

# (name, vocab_size, temperature, chunk_tokens, sliced): B*T = 2 x 13 = 26 positions, padded vocabulary 96 = 2 x 48
CASES = [
    ("full_vocab_one_chunk", None, 1.0, 64, False),
    ("padding6_chunk5", 90, 1.0, 5, False),
    ("padding6_temp07_chunk5", 90, 0.7, 5, False),
    ("no_padding_temp07_chunk13", None, 0.7, 13, False),
    ("sliced_padding6_temp07_chunk7", 90, 0.7, 7, True),
    ("rank1_all_padding_chunk4", 40, 1.0, 4, False),
]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().cpu().float() - b.detach().cpu().float()).abs().max().item()


def _full_vocab_reference(full_BTV, target_BT, grad_BT, vocab_size, temperature):
    """Plain fp32 log-softmax over the true vocabulary on the host; padding columns get zero gradient."""
    leaf = full_BTV.detach().clone().requires_grad_(True)
    logp_BTV = torch.log_softmax(leaf[..., :vocab_size] / temperature, dim=-1)
    logp_BT = logp_BTV.gather(-1, target_BT.unsqueeze(-1)).squeeze(-1)
    entropy_BT = -(logp_BTV.exp() * logp_BTV).sum(-1)
    (grad_BTV,) = torch.autograd.grad(logp_BT, leaf, grad_BT)
    return logp_BT, entropy_BT.detach(), grad_BTV


def main():
    out_dir = Path(sys.argv[1])
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=2)
    from megatron.core import parallel_state as ps

    from megatron_ext.logprobs import vocab_parallel_logprobs_and_entropy, vocab_parallel_logprobs_and_entropy_chunked

    tp_rank, group, dev = ps.get_tensor_model_parallel_rank(), ps.get_tensor_model_parallel_group(), layout.device
    B, T, V = 2, 13, 96
    shard = V // 2
    cases = {}
    for i, (name, vocab_size, temperature, chunk_tokens, sliced) in enumerate(CASES):
        g = torch.Generator().manual_seed(100 + i)  # the same full logits on both ranks
        full_BTV = torch.randn(B, T + 1, V, generator=g) * 2.0
        target_BT = torch.randint(0, vocab_size or V, (B, T + 1), generator=g)
        grad_BT = torch.randn(B, T + 1, generator=g)
        if vocab_size is not None:
            full_BTV[..., vocab_size:] = 50.0  # padding that would dominate if left unmasked
        if sliced:  # the learner's `logits[:, :-1]`: a non-contiguous view of this rank's logits
            local_BTV = full_BTV[..., tp_rank * shard:(tp_rank + 1) * shard].contiguous().to(dev)[:, :-1]
            full_BTV, target_BT, grad_BT = full_BTV[:, :-1], target_BT[:, 1:], grad_BT[:, 1:]
        else:
            full_BTV, target_BT, grad_BT = full_BTV[:, 1:], target_BT[:, 1:], grad_BT[:, 1:]
            local_BTV = full_BTV[..., tp_rank * shard:(tp_rank + 1) * shard].contiguous().to(dev)
        target_dev, grad_dev = target_BT.to(dev), grad_BT.to(dev)

        leaf = local_BTV.detach().requires_grad_(True)
        logp_BT, entropy_BT = vocab_parallel_logprobs_and_entropy_chunked(
            leaf, target_dev, vocab_size, chunk_tokens=chunk_tokens, temperature=temperature)
        (grad_BTV,) = torch.autograd.grad(logp_BT, leaf, grad_dev)

        ref_leaf = local_BTV.detach().requires_grad_(True)
        scaled = ref_leaf if temperature == 1.0 else ref_leaf / temperature
        ref_logp_BT, ref_entropy_BT = vocab_parallel_logprobs_and_entropy(scaled, target_dev, vocab_size)
        (ref_grad_BTV,) = torch.autograd.grad(ref_logp_BT, ref_leaf, grad_dev)

        diffs = {
            "logp_vs_unchunked_tp2": _max_diff(logp_BT, ref_logp_BT),
            "entropy_vs_unchunked_tp2": _max_diff(entropy_BT, ref_entropy_BT),
            "grad_vs_unchunked_tp2": _max_diff(grad_BTV, ref_grad_BTV),
        }
        parts = [torch.empty_like(grad_BTV) for _ in range(2)]
        torch.distributed.all_gather(parts, grad_BTV.contiguous(), group=group)
        if tp_rank == 0:
            full_logp, full_entropy, full_grad = _full_vocab_reference(
                full_BTV, target_BT, grad_BT, vocab_size or V, temperature)
            diffs["logp_vs_full_vocab"] = _max_diff(logp_BT, full_logp)
            diffs["entropy_vs_full_vocab"] = _max_diff(entropy_BT, full_entropy)
            diffs["grad_vs_full_vocab"] = _max_diff(torch.cat([p.cpu() for p in parts], dim=-1), full_grad)
        cases[name] = diffs
    result = {"rank": layout.rank, "tp_rank": tp_rank, "device": str(dev), "cases": cases}
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
