"""One function that brings up torch.distributed and Megatron's parallel state, on CPU or GPU."""

from __future__ import annotations

import atexit
import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_ext import cpu_compat, cpu_malloc, simulated_accelerator


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
    The layout's `device` is where the run's tensors live: this rank's GPU, the CPU, or with
    MEGATRON_EXT_SIMULATED_ACCELERATOR=1 on a CPU machine the simulated accelerator (which refuses host tensors as
    CUDA and NCCL do; megatron_ext.simulated_accelerator).
    """
    from megatron.core import parallel_state, tensor_parallel

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        device = simulated_accelerator.enable() if simulated_accelerator.requested() else torch.device("cpu")
        cpu_compat.apply(device)
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
        backend = "nccl" if on_gpu else simulated_accelerator.BACKEND if device.type != "cpu" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
        if backend != "nccl":
            # gloo's groups own running threads: left to the interpreter's final teardown, a joinable thread can be
            # destroyed and abort the process ("terminate called without an active exception") after a clean run.
            # (NCCL's destroy can block on a peer that died, so GPU runs keep PyTorch's own exit path.)
            atexit.register(destroy_distributed)
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
        device=torch.device("cuda", local_rank) if on_gpu else device,
    )


def set_cpu_threads(threads_per_rank: int = 0) -> None:
    """On CPU, torch threads per rank: `threads_per_rank`, or this node's cores over this node's ranks (torchrun's
    LOCAL_WORLD_SIZE; WORLD_SIZE counts every node's ranks). Nothing on GPU."""
    if torch.cuda.is_available():
        return
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads_per_rank or max(1, cores // ranks_here))


def on_accelerator() -> bool:
    """Whether this process's run trains on an accelerator (CUDA, or the simulated one): the defaults that go with
    one (distributed optimizer at DP > 1) follow it. Valid before `init_distributed`."""
    return torch.cuda.is_available() or simulated_accelerator.requested()


def current_device() -> torch.device:
    """This process's device for models and batches: its GPU, else the device `init_distributed` chose (the CPU or
    the simulated accelerator)."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return cpu_compat.device()


def sum_over_ranks(values, group=None) -> list[float]:
    """Host-side numbers (metrics, counts, flags) summed over the ranks of `group` (default: all), returned on
    every rank. The reduction runs on the default group's device (NCCL takes only CUDA tensors, gloo host ones),
    in float64; one transfer each way. Without torch.distributed: the values themselves."""
    values = [float(v) for v in values]
    if not dist.is_initialized():
        return values
    totals = torch.tensor(values, dtype=torch.float64, device=current_device())
    dist.all_reduce(totals, group=group)
    return totals.tolist()


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one (e.g. one rank past its time limit)."""
    return sum_over_ranks([1.0 if flag else 0.0])[0] > 0


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
