"""torchrun worker (2 ranks, MEGATRON_EXT_SIMULATED_ACCELERATOR=1): what the simulated accelerator refuses and allows,
recorded per rank for tests/test_device_discipline.py."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def _error(fn) -> str:
    try:
        fn()
    except RuntimeError as e:
        return str(e)
    return "no error"


def main():
    out_dir = Path(sys.argv[1])
    from megatron_ext.distributed import init_distributed

    layout = init_distributed()
    dev = layout.device
    r = {"device": str(dev)}
    x = torch.arange(4.0).to(dev)
    r["mixed_add"] = _error(lambda: x + torch.ones(4))
    weight = torch.randn(6, 3).to(dev)
    r["host_indices_embedding"] = _error(lambda: torch.nn.functional.embedding(torch.tensor([1, 2]), weight))
    r["host_index_into_device_tensor"] = x[torch.tensor([2, 3])].tolist()
    r["host_scalar"] = (x[2:] + torch.tensor(1.0)).tolist()
    r["host_all_reduce_default_group"] = _error(lambda: dist.all_reduce(torch.ones(1)))
    gloo = dist.new_group(backend="gloo")
    host = torch.tensor([1.0 + layout.rank])
    dist.all_reduce(host, group=gloo)
    r["host_all_reduce_gloo_group"] = host.item()
    on_device = torch.tensor([1.0 + layout.rank], device=dev)
    dist.all_reduce(on_device)
    r["device_all_reduce"] = on_device.item()
    gathered = [None, None]
    dist.all_gather_object(gathered, layout.rank)
    r["all_gather_object"] = gathered
    # autograd through device tensors gives the CPU's gradient, bit for bit
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    inp = torch.randn(5, 3)
    lin(inp).square().sum().backward()
    cpu_grad = lin.weight.grad.clone()
    lin.weight.grad = None
    lin = lin.to(dev)
    lin(inp.to(dev)).square().sum().backward()
    r["grad_equal_cpu"] = torch.equal(lin.weight.grad.cpu(), cpu_grad)
    r["to_host_type"] = type(lin.weight.detach().cpu()).__name__
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(r))


if __name__ == "__main__":
    main()
