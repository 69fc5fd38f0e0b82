"""The compatibility layer that lets megatron-core 0.16 run on a CPU-only torch (gloo, fp32).

Megatron-core assumes CUDA in a few dozen places: `torch.cuda.current_device()` as a device, `device="cuda"`
literals in schedules / DDP / optimizers, `.cuda()` calls, `grad.type() == "torch.cuda.FloatTensor"` checks,
the CUDA RNG tracker and a causal mask built on the GPU. `apply()` patches exactly those, once per process,
and only when CUDA is unavailable. Everything else in the project calls Megatron as it would on a GPU.
"""

from __future__ import annotations

import time
from functools import lru_cache

import torch
from torch.overrides import TorchFunctionMode

_applied = False


class _CpuEvent:
    """Stand-in for torch.cuda.Event(enable_timing=True), used by Megatron's inference timers."""

    def __init__(self, *args, **kwargs):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def wait(self, stream=None):
        pass

    def query(self):
        return True

    def elapsed_time(self, end):
        return (end.t - self.t) * 1000.0


def _is_cuda(device) -> bool:
    if device is None or isinstance(device, torch.dtype):
        return False
    try:
        return torch.device(device).type == "cuda"
    except (RuntimeError, TypeError):
        return False


class _CudaToCpuMode(TorchFunctionMode):
    """Rewrites `device="cuda"` / `.cuda()` / `.to("cuda")` to the CPU and makes `.type()` report CUDA types.

    Autograd's backward runs in C++ and never enters this mode, so the cost is one Python call per forward op.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            return func(*args).replace("torch.", "torch.cuda.", 1)
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs = dict(kwargs, device="cpu")
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda(args[1]):
            args = (args[0], "cpu") + tuple(args[2:])
        return func(*args, **kwargs)


def apply() -> bool:
    """Patch torch.cuda / megatron-core for CPU execution. No-op (returns False) when CUDA is available."""
    global _applied
    if torch.cuda.is_available():
        return False
    if _applied:
        return True
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.Event = _CpuEvent
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.cuda.manual_seed_all = lambda seed: torch.default_generator.manual_seed(int(seed))

    import megatron.core.fusions.fused_softmax as fused_softmax
    import megatron.core.tensor_parallel.random as mpu_random
    import megatron.core.transformer.utils as transformer_utils

    mpu_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mpu_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)

    @lru_cache(maxsize=None)
    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq, dtype=torch.bool), diagonal=1)

    transformer_utils.get_default_causal_mask = get_default_causal_mask
    fused_softmax.get_default_causal_mask = get_default_causal_mask

    _CudaToCpuMode().__enter__()
    _applied = True
    return True


def cpu_transformer_config_overrides() -> dict:
    """TransformerConfig fields that must be off on CPU (fused CUDA kernels, TE-only paths)."""
    return dict(
        use_cpu_initialization=True,
        gradient_accumulation_fusion=False,
        masked_softmax_fusion=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        batch_p2p_sync=False,
        sequence_parallel=False,
    )
