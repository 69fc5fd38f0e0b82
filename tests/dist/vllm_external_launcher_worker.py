"""torchrun worker: the vLLM rollout engine inside the torchrun world (vLLM's external_launcher), one independent
engine per rank. Reports where vLLM put its worker and weights before and after an in-memory push of tensors that
live on the learner's device, and gives every rank a different amount of generation work (no lockstep).
With a third argument "plain" it runs as a plain process, outside any torch.distributed world (as evaluation does)."""

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def _worker_info(worker):
    return {"backend": worker.parallel_config.distributed_executor_backend, "rank": worker.rank,
            "local_rank": worker.local_rank, "device": str(worker.device)}


def _param_devices(model):
    return sorted({str(t.device) for t in [*model.parameters(), *model.buffers()]})


def _current_device():
    return torch.cuda.current_device() if torch.cuda.is_available() else None


def main():
    hf_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    plain = sys.argv[3:] == ["plain"]
    torch.set_num_threads(1)
    from safetensors.torch import load_file

    from megatron_ext.distributed import init_distributed
    from pipeline.rl.engine import EngineSpec, SamplingSettings, build_engine

    if plain:
        from types import SimpleNamespace

        layout = SimpleNamespace(rank=0, device=torch.device("cuda:0" if torch.cuda.is_available() else "cpu"))
    else:
        layout = init_distributed(tp=1, pp=1, seed=0)
    world = dist.is_initialized()
    device_before = _current_device()
    engine = build_engine("vllm", EngineSpec(str(hf_dir), seed=layout.rank, max_model_len=128))
    result = {
        "rank": layout.rank, "local_rank": int(os.environ.get("LOCAL_RANK", "0")), "learner_device": str(layout.device),
        "engine_backend": engine.executor_backend, "worker": engine.llm.collective_rpc(_worker_info)[0],
        "current_device": [device_before, _current_device()],
        "param_devices_built": engine.llm.apply_model(_param_devices)[0],
    }
    # the learner's tensors, on its device, streamed one at a time (tied model: vLLM needs lm_head.weight)
    state = load_file(hf_dir / "model.safetensors")
    state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    pushed = []

    def stream():
        for name, tensor in state.items():
            pushed.append(name)
            yield name, tensor.to(layout.device)

    engine.update_weights(stream())
    result["pushed"] = len(pushed) == len(state)
    result["current_device"].append(_current_device())
    result["param_devices_pushed"] = engine.llm.apply_model(_param_devices)[0]
    # rank r: r + 1 generate calls of r + 1 prompts each, longer answers on higher ranks
    result["samples_per_call"] = [
        sum(len(g) for g in engine.generate([[5 + i, 40, 41] for i in range(layout.rank + 1)],
                                              SamplingSettings(max_new_tokens=6 + 6 * layout.rank, n=2, seed=call)))
        for call in range(layout.rank + 1)
    ]
    result["world"] = world
    if not plain:
        dist.barrier()
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
