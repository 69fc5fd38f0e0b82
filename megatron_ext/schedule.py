"""Running micro-batches through a (possibly pipelined) Megatron model with Megatron's own schedules.

`forward_backward` wraps `get_forward_backward_func()` so the same call works at PP=1 and PP>1: each
micro-batch is a dict holding `tokens` [b, s] (with a `layout` when they are in megatron_ext.shared_prefix's
layout) and whatever the loss function needs; the loss function gets this rank's vocab-parallel logits
[b, s, V/tp] on the last stage and returns (loss, metrics dict). Losses are summed over micro-batches as
returned (no division by their number): callers normalise, which is what the RL loss with its constant Dr. GRPO
normaliser needs.
"""

from __future__ import annotations

from typing import Callable

import torch

from megatron_ext import shared_prefix


def _position_ids(tokens_BS: torch.Tensor) -> torch.Tensor:
    return torch.arange(tokens_BS.shape[1], device=tokens_BS.device).unsqueeze(0).expand_as(tokens_BS)


def forward_backward(
    model,
    microbatches: list[dict],
    loss_fn: Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]],
    *,
    forward_only: bool,
) -> list[dict]:
    """Run all micro-batches; returns the loss_fn metrics dicts on the last PP stage, [] elsewhere.

    All micro-batches must share one [b, s] shape when PP > 1 (p2p buffers are fixed-size).
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    models = model if isinstance(model, list) else [model]
    n = len(microbatches)
    batch_iter = iter(microbatches)

    def forward_step(data_iterator, chunk):
        mb = next(data_iterator)
        tokens = mb["tokens"]
        with shared_prefix.use(mb.get("layout")):  # a micro-batch in megatron_ext.shared_prefix's layout
            output = chunk(tokens, _position_ids(tokens), None)

        def loss_func(logits_BSV):
            loss, metrics = loss_fn(logits_BSV, mb)
            return loss * n, metrics  # undo the schedule's division by the number of micro-batches

        return output, loss_func

    b, s = microbatches[0]["tokens"].shape
    return get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=batch_iter,
        model=models,
        num_microbatches=n,
        seq_length=s,
        micro_batch_size=b,
        forward_only=forward_only,
    )


@torch.no_grad()
def forward_logits(model, tokens_BS: torch.Tensor, micro_batch_size: int | None = None) -> torch.Tensor | None:
    """Vocab-parallel logits [B, S, V/tp] on the last pipeline stage (on the model's device), None on the others."""
    from megatron.core import parallel_state as ps

    models = model if isinstance(model, list) else [model]
    for m in models:
        m.eval()
    tokens_BS = tokens_BS.to(next(models[0].parameters()).device)
    mbs = micro_batch_size or tokens_BS.shape[0]
    microbatches = [{"tokens": t} for t in tokens_BS.split(mbs)]
    outputs = forward_backward(
        models, microbatches, lambda logits, mb: (logits.new_zeros(()), {"logits": logits.detach()}), forward_only=True
    )
    if not ps.is_pipeline_last_stage():
        return None
    return torch.cat([o["logits"] for o in outputs])


def wrap_with_ddp(model, *, use_distributed_optimizer: bool = False, overlap_grad_reduce: bool = False,
                  grad_reduce_in_fp32: bool = True):
    """Megatron DDP around a GPTModel, with the schedule hooks that make it reduce gradients.

    The schedules only all-reduce data-parallel gradients (and tied-embedding / layernorm grads across
    stages) through `config.finalize_model_grads_func`; without it every DP rank silently steps on its own
    gradients.
    """
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads

    ddp = DistributedDataParallel(
        model.config,
        DistributedDataParallelConfig(grad_reduce_in_fp32=grad_reduce_in_fp32, overlap_grad_reduce=overlap_grad_reduce,
                                      use_distributed_optimizer=use_distributed_optimizer),
        model,
    )
    model.config.finalize_model_grads_func = finalize_model_grads
    if overlap_grad_reduce:
        model.config.no_sync_func = ddp.no_sync
    return ddp
