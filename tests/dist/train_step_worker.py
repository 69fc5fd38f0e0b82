"""torchrun worker: a few optimizer steps through Megatron DDP + get_megatron_optimizer + the schedules.

Same data and initial weights at every layout, so losses must agree across TP/PP/DP layouts.
"""

import json
import sys
from pathlib import Path

import torch


def main():
    hf_dir, out_dir, tp, pp, dist_opt = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=tp, pp=pp, seed=0)
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from transformers import AutoConfig

    from megatron_ext.models import build_model
    from megatron_ext.logprobs import vocab_parallel_logprobs
    from megatron_ext.schedule import forward_backward, wrap_with_ddp
    from megatron_ext.weights import load_hf_weights

    config = AutoConfig.from_pretrained(hf_dir)
    model = build_model(config, tp=tp, pp=pp)
    load_hf_weights(model, hf_dir)
    ddp = wrap_with_ddp(model, use_distributed_optimizer=dist_opt)
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=1e-3, weight_decay=0.0, clip_grad=1.0, bf16=False,
                        use_distributed_optimizer=dist_opt), [ddp])

    g = torch.Generator().manual_seed(3)
    global_batch = torch.randint(0, config.vocab_size, (4, 16), generator=g)
    my_rows = global_batch.chunk(layout.dp)[layout.dp_rank]
    losses = []
    for step in range(3):
        ddp.zero_grad_buffer()
        optimizer.zero_grad()

        def loss_fn(logits, mb):
            logp = vocab_parallel_logprobs(logits[:, :-1], mb["tokens"][:, 1:], vocab_size=config.vocab_size)
            # mean over the global batch: rows of this micro-batch / all rows, summed over DP by the reduction
            loss = -logp.mean(dim=1).sum() / global_batch.shape[0] * layout.dp
            return loss, {"loss_sum": -logp.mean(dim=1).sum().detach()}

        out = forward_backward([ddp], [{"tokens": t} for t in my_rows.split(1)], loss_fn, forward_only=False)
        ok, grad_norm, _ = optimizer.step()
        total = torch.tensor(float(sum(o["loss_sum"].item() for o in out)))
        torch.distributed.all_reduce(total)  # only last-stage ranks contribute; each dp row counted tp times
        losses.append(total.item() / (global_batch.shape[0] * tp))
        assert ok
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps({"losses": losses, "grad_norm": grad_norm}))


if __name__ == "__main__":
    main()
