"""One function that brings up torch.distributed and Megatron's parallel state, on CPU or GPU."""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_ext import cpu_compat, cpu_malloc


@dataclass(frozen=True)
class ParallelLayout:
    rank: int
    world_size: int
    local_rank: int
    tp: int
    pp: int
    dp: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def validate_world(world_size: int, tp: int, pp: int) -> int:
    """Return the data-parallel size, or raise with what to change."""
    if tp < 1 or pp < 1:
        raise ValueError(f"tensor_parallel ({tp}) and pipeline_parallel ({pp}) must be >= 1")
    if world_size % (tp * pp) != 0:
        raise ValueError(
            f"world size {world_size} is not divisible by tensor_parallel x pipeline_parallel = {tp} x {pp}; "
            f"launch a multiple of {tp * pp} processes (torchrun --nproc_per_node) or change tp/pp"
        )
    return world_size // (tp * pp)


def init_distributed(tp: int = 1, pp: int = 1, seed: int = 1234, timeout_s: int = 1800) -> ParallelLayout:
    """Initialise torch.distributed (gloo on CPU, nccl on GPU) and Megatron's model-parallel groups.

    Works under torchrun / srun+torchrun (reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT) and as a plain
    single process (world of one). Idempotent: a second call with the same sizes returns the same layout.
    """
    from megatron.core import parallel_state, tensor_parallel

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        cpu_compat.apply()
        cpu_malloc.retain_freed_memory()
    if not dist.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        validate_world(int(os.environ["WORLD_SIZE"]), tp, pp)
        if on_gpu:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(
            backend="nccl" if on_gpu else "gloo", timeout=datetime.timedelta(seconds=timeout_s)
        )
    world_size = dist.get_world_size()
    dp = validate_world(world_size, tp, pp)
    if parallel_state.model_parallel_is_initialized():
        if (
            parallel_state.get_tensor_model_parallel_world_size() != tp
            or parallel_state.get_pipeline_model_parallel_world_size() != pp
        ):
            raise RuntimeError("Megatron parallel state already initialised with different tp/pp sizes")
    else:
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp
        )
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return ParallelLayout(
        rank=dist.get_rank(),
        world_size=world_size,
        local_rank=local_rank,
        tp=tp,
        pp=pp,
        dp=dp,
        tp_rank=parallel_state.get_tensor_model_parallel_rank(),
        pp_rank=parallel_state.get_pipeline_model_parallel_rank(),
        dp_rank=parallel_state.get_data_parallel_rank(),
        device=torch.device("cuda", local_rank) if on_gpu else torch.device("cpu"),
    )


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
