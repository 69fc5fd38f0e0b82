"""A simulated accelerator for CPU machines: a second device that computes on the CPU but refuses what CUDA refuses.

Most of this project's development has no GPU, yet its users run on CUDA, where a tensor left on the host next to
a model on the device fails (`Expected all tensors to be on the same device`) and NCCL rejects host tensors in
collectives. `enable()` makes both failures happen on a CPU:

- a device `sim` (torch's PrivateUse1 backend, registered from Python): `x.to("sim")`, `torch.zeros(..., device=
  "sim")` and modules moved there give `SimTensor`s, whose every aten op runs on the CPU tensor they wrap and
  raises, as CUDA kernels do, when a non-scalar host tensor is mixed in (host indices for indexing and cross-device
  copies are allowed, as on CUDA). Autograd, views and in-place ops behave as on any device; results are the CPU's
  bit for bit;
- collectives on the default process group (and every group made with the default backend: NCCL's role) refuse
  host tensors with NCCL's message; groups made with `backend="gloo"` (Megatron's CPU-side groups) accept them.
  Object collectives (`all_gather_object`, ...) go through the device, as with NCCL.

`megatron_ext.distributed.init_distributed` turns it on when `SIMULATED_ACCELERATOR_ENV` is "1": then the run's
device (`ParallelLayout.device`) is `sim:0` and Megatron's `device="cuda"` tensors land there
(`megatron_ext.cpu_compat`). CUDA-only features (transformer-engine, bf16 kernels, CUDA streams) stay off, as on CPU:
it checks where tensors live, not CUDA's numerics. Every op passes through Python, so it is for tests at tiny sizes.
Gaps: collectives run under `torch.inference_mode()` are not checked (autograd keys are off there).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils._pytree import tree_flatten, tree_map

SIMULATED_ACCELERATOR_ENV = "MEGATRON_EXT_SIMULATED_ACCELERATOR"
DEVICE_TYPE = "sim"
BACKEND = f"cpu:gloo,{DEVICE_TYPE}:gloo"
"""torch.distributed backend of a simulated run: gloo underneath (SimTensors reach it as their CPU tensors)."""

# ops that take host tensors next to device ones on CUDA too: cross-device copies, host index tensors
_HOST_TENSORS_ALLOWED = {
    torch.ops.aten.copy_.default, torch.ops.aten._to_copy.default, torch.ops.aten.index.Tensor,
    torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default, torch.ops.aten._index_put_impl_.default,
}
# collectives that carry data (barriers carry a dummy tensor of the backend's choosing)
_DATA_COLLECTIVES = (
    "allreduce_", "allreduce_coalesced_", "allgather_", "_allgather_base_", "allgather_coalesced_",
    "allgather_into_tensor_coalesced_", "reduce_scatter_", "_reduce_scatter_base_", "reduce_scatter_tensor_coalesced_",
    "reduce_", "broadcast_", "gather_", "scatter_", "alltoall_", "alltoall_base_", "send", "recv_", "recv_any_source_",
)

_enabled = False
_libraries = []  # torch.library registrations live as long as their Library objects
_host_groups: set = set()  # groups made with an explicit gloo backend: host tensors are theirs


def requested() -> bool:
    return os.environ.get(SIMULATED_ACCELERATOR_ENV, "0") == "1"


def device() -> torch.device:
    return torch.device(DEVICE_TYPE, 0)


def _is_sim_device(d) -> bool:
    return d is not None and not isinstance(d, torch.dtype) and torch.device(d).type == DEVICE_TYPE


class SimTensor(torch.Tensor):
    """A tensor on the `sim` device: metadata of its own, data in the CPU tensor `_cpu` (same sizes and strides)."""

    @staticmethod
    def __new__(cls, cpu: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(
            cls, cpu.shape, strides=cpu.stride(), storage_offset=cpu.storage_offset(), dtype=cpu.dtype,
            device=device(), requires_grad=False)
        out._cpu = cpu
        return out

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __repr__(self):
        return f"SimTensor({self._cpu!r})"

    # `.data` is a C-level property that would share metadata but not `_cpu`: keep the two together
    @property
    def data(self):
        return self.detach()

    @data.setter
    def data(self, value):
        if not isinstance(value, SimTensor):
            raise RuntimeError(f"cannot assign data on device {value.device} to a tensor on {device()}")
        torch._C.TensorBase.data.__set__(self, value)
        self._cpu = value._cpu

    def __reduce_ex__(self, protocol):  # torch.save writes its host copy (a loader maps CUDA tensors to the host too)
        return self._cpu.__reduce_ex__(protocol)

    def tolist(self):  # a device -> host sync on CUDA; `.numpy()` stays refused, as there
        return self._cpu.tolist()

    def data_ptr(self):
        return self._cpu.data_ptr()

    def untyped_storage(self):
        return self._cpu.untyped_storage()

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _run(func, args, kwargs):
    host = []

    def unwrap(x):
        if isinstance(x, SimTensor):
            return x._cpu
        if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() > 0:
            host.append(x)
        if isinstance(x, torch.device) and x.type == DEVICE_TYPE:
            return torch.device("cpu")
        if isinstance(x, str) and x.startswith(DEVICE_TYPE):
            return "cpu"
        return x

    cpu_args, cpu_kwargs = tree_map(unwrap, args), tree_map(unwrap, kwargs)
    if host and func not in _HOST_TENSORS_ALLOWED:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                           f"{device()} and cpu! ({func}: a host tensor of shape {list(host[0].shape)} next to "
                           f"device tensors; move it with .to(device))")
    out = func(*cpu_args, **cpu_kwargs)
    if func is torch.ops.aten._to_copy.default:
        target = kwargs.get("device")
        on_device = _is_sim_device(target) if target is not None else isinstance(args[0], SimTensor)
        return SimTensor(out) if on_device else out
    schema = func._schema
    if len(schema.returns) == 1 and schema.returns[0].alias_info is not None and schema.returns[0].alias_info.is_write:
        # in-place / out= ops return the tensor they wrote: the caller's wrapper, whose `_cpu` was written
        for argument, value in zip(schema.arguments, args):
            if argument.alias_info is not None and argument.alias_info.is_write:
                return value
        for argument in schema.arguments:
            if argument.kwarg_only and argument.name in kwargs and argument.alias_info is not None:
                return kwargs[argument.name]
    return tree_map(lambda x: SimTensor(x) if type(x) is torch.Tensor else x, out)


def _factory(op, *args, **kwargs):
    """PrivateUse1 kernel of ops without a SimTensor argument: factories with device='sim'."""
    return _run(op, args, kwargs)


def _refuse_host_tensors(name: str):
    op = getattr(torch.ops.c10d, name).default

    def checked(*args, **kwargs):
        group = next((a for a in args if isinstance(a, torch.ScriptObject)), None)
        group = dist.ProcessGroup.unbox(group) if group is not None else None
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if group not in _host_groups and any(t.device.type == "cpu" for t in tensors):
            raise RuntimeError(f"{name}: tensors must be on the accelerator for this process group (as with NCCL, "
                               f"which rejects CPU tensors); got a host tensor. Put it on the model's device, or use "
                               f"a gloo group for host-side values")
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args, **kwargs)

    return checked


def _track_groups() -> None:
    """Remember groups made with an explicit gloo backend: those are the run's host-side groups."""
    from torch.distributed import distributed_c10d as c10d

    new_group = dist.new_group

    def tracked_new_group(*args, **kwargs):
        group = new_group(*args, **kwargs)
        backend = kwargs.get("backend", args[2] if len(args) > 2 else None)
        if backend is not None and str(backend).lower() == "gloo" and isinstance(group, dist.ProcessGroup):
            _host_groups.add(group)
        return group

    dist.new_group = c10d.new_group = tracked_new_group
    object_device = c10d._get_object_coll_device

    def object_collective_device(group=None):
        return object_device(group) if group in _host_groups else DEVICE_TYPE

    c10d._get_object_coll_device = object_collective_device


def enable() -> torch.device:
    """Register the `sim` device and the collective checks (once per process); returns the device."""
    global _enabled
    if _enabled:
        return device()
    if torch.cuda.is_available():
        raise RuntimeError(f"{SIMULATED_ACCELERATOR_ENV}=1 simulates an accelerator on a machine without one; "
                           "this machine has CUDA: unset it")
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    _setup_privateuseone_for_python_backend(DEVICE_TYPE)
    factories = torch.library.Library("_", "IMPL")
    factories.fallback(_factory, "PrivateUse1")
    # torch.tensor(data, device="sim") and torch.tensor([device scalars]) run these with the Python key off, where
    # the fallback does not serve them (`_to_copy` has a composite kernel, which a backend fallback does not replace)
    host_paths = torch.library.Library("aten", "IMPL")
    for name in ("_to_copy", "_local_scalar_dense"):
        op = getattr(torch.ops.aten, name).default
        host_paths.impl(name, lambda *args, _op=op, **kwargs: _run(_op, args, kwargs), "PrivateUse1")
    collectives = torch.library.Library("c10d", "IMPL")
    for name in _DATA_COLLECTIVES:
        collectives.impl(name, _refuse_host_tensors(name), "AutogradCPU")
    _libraries.extend([factories, host_paths, collectives])
    _track_groups()
    _enabled = True
    return device()
