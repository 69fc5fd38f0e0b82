"""The compatibility layer that lets megatron-core 0.16 run on a CPU-only torch (gloo, fp32).

Megatron-core assumes CUDA in a few dozen places: `torch.cuda.current_device()` used as a device,
`device="cuda"` literals in schedules / DDP / optimizers, `.cuda()` calls, `param.type() ==
"torch.cuda.FloatTensor"` checks, the CUDA RNG tracker and a causal mask built on the GPU. `apply()` patches
exactly those, once per process, and only when CUDA is unavailable. "The device" below is the CPU, or the simulated
accelerator (megatron_ext.simulated_accelerator) when the run uses one:

- `torch.cuda.current_device()` returns the device; `Tensor.cuda()` moves a tensor there (on the CPU: returns it
  itself); synchronize / Event / RNG-state calls become CPU equivalents.
- Inside `megatron.*` modules (also ones imported later), the module-global name `torch` is a thin proxy
  whose tensor factories map `device="cuda"` to the device. Nothing outside Megatron sees it, and the hot path
  (layers, autograd) pays nothing: a global TorchFunctionMode doing the same cost ~23% of step time.
- The three Megatron functions that assert CUDA tensor type strings run with `Tensor.type()` reporting
  `torch.cuda.*` for the duration of the call.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import time
import types
from contextlib import contextmanager
from functools import lru_cache

import torch

_applied = False
_device = torch.device("cpu")
_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "rand", "randn", "randint", "as_tensor",
              "zeros_like", "ones_like", "empty_like", "full_like", "randn_like", "rand_like", "linspace")


class _CpuEvent:
    """Stand-in for torch.cuda.Event(enable_timing=True), used by Megatron's timers."""

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
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, str) and device.startswith("cuda")


def _cpu_factory(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _is_cuda(kwargs.get("device")):
            kwargs["device"] = _device
        return fn(*args, **kwargs)

    return wrapper


class _CpuTorch(types.ModuleType):
    """`torch` as Megatron modules see it on CPU: everything delegated, factories CUDA -> the device."""

    def __init__(self):
        super().__init__("torch")
        for name in _FACTORIES:
            setattr(self, name, _cpu_factory(getattr(torch, name)))

    def __getattr__(self, name):
        return getattr(torch, name)


_CPU_TORCH = None


def _patch_module(module) -> None:
    if getattr(module, "torch", None) is torch:
        module.torch = _CPU_TORCH


class _PatchMegatronOnImport(importlib.abc.MetaPathFinder):
    """Patches each `megatron.*` module right after it is executed."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("megatron."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                original = spec.loader.exec_module

                def exec_module(module, _original=original):
                    _original(module)
                    _patch_module(module)

                spec.loader.exec_module = exec_module
                return spec
        return None


@contextmanager
def _cuda_type_strings():
    original = torch.Tensor.type

    def cuda_type(self, *args, **kwargs):
        if args or kwargs:
            return original(self, *args, **kwargs)
        return "torch.cuda." + original(self).rsplit(".", 1)[-1]  # torch.FloatTensor, torch.sim.FloatTensor

    torch.Tensor.type = cuda_type
    try:
        yield
    finally:
        torch.Tensor.type = original


def _with_cuda_type_strings(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _cuda_type_strings():
            return fn(*args, **kwargs)

    return wrapper


def apply(device: torch.device | None = None) -> bool:
    """Patch torch.cuda / megatron-core for execution on `device` (default the CPU; the simulated accelerator's
    device in a run that uses it). No-op (returns False) when CUDA is available."""
    global _applied, _CPU_TORCH, _device
    if torch.cuda.is_available():
        return False
    device = torch.device(device or "cpu")
    if _applied:
        if device != _device:
            raise RuntimeError(f"cpu_compat already applied for {_device}, asked again for {device}")
        return True
    _device = device
    torch.cuda.current_device = lambda: _device
    torch.cuda.synchronize = lambda device=None: None
    torch.cuda.Event = _CpuEvent
    torch.cuda.get_rng_state = lambda device="cuda": torch.get_rng_state()
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.cuda.manual_seed_all = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.Tensor.cuda = lambda self, *args, **kwargs: self.to(_device)

    _CPU_TORCH = _CpuTorch()
    for name, module in list(sys.modules.items()):
        if name.startswith("megatron.") and module is not None:
            _patch_module(module)
    sys.meta_path.insert(0, _PatchMegatronOnImport())

    import megatron.core.fusions.fused_softmax as fused_softmax
    import megatron.core.optimizer.clip_grads as clip_grads
    import megatron.core.optimizer.distrib_optimizer as distrib_optimizer
    import megatron.core.optimizer.optimizer as optimizer
    import megatron.core.tensor_parallel.random as mpu_random
    import megatron.core.transformer.utils as transformer_utils

    mpu_random._get_cuda_rng_state = lambda device="cuda", clone=False, graph_safe=False: torch.get_rng_state()
    mpu_random._set_cuda_rng_state = lambda new_state, device=-1, graph_safe=False: torch.set_rng_state(new_state)

    @lru_cache(maxsize=None)
    def get_default_causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq, dtype=torch.bool, device=_device), diagonal=1)

    transformer_utils.get_default_causal_mask = get_default_causal_mask
    fused_softmax.get_default_causal_mask = get_default_causal_mask

    clip_grads.clip_grad_by_total_norm_fp32 = _with_cuda_type_strings(clip_grads.clip_grad_by_total_norm_fp32)
    optimizer.clip_grad_by_total_norm_fp32 = clip_grads.clip_grad_by_total_norm_fp32
    optimizer.Float16OptimizerWithFloat16Params.__init__ = _with_cuda_type_strings(
        optimizer.Float16OptimizerWithFloat16Params.__init__)
    build_groups = distrib_optimizer.DistributedOptimizer._build_model_and_main_param_groups
    distrib_optimizer.DistributedOptimizer._build_model_and_main_param_groups = staticmethod(
        _with_cuda_type_strings(build_groups))
    _applied = True
    return True


def device() -> torch.device:
    """Where Megatron's `device="cuda"` tensors go in this process (the CPU until `apply` says otherwise)."""
    return _device


def cpu_transformer_config_overrides() -> dict:
    """TransformerConfig fields that must be off on CPU (fused CUDA kernels, TE-only paths). On the simulated
    accelerator parameters are made on the device, as on a GPU (Megatron moves some with `param.data = ...`)."""
    return dict(
        use_cpu_initialization=_device.type == "cpu",
        gradient_accumulation_fusion=False,
        masked_softmax_fusion=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        batch_p2p_sync=False,
        sequence_parallel=False,
    )
