"""A plain PyTorch rollout engine: transformers' Llama with a KV cache and our own sampling loop.

The fallback when vLLM is not installed, and the reference for exactness tests: it samples with one seeded
torch.Generator per call, so the same weights and seed give the same tokens on every run (exact resume).
"""

from __future__ import annotations

from typing import Iterable

import torch

from pipeline.rl.generator import GeneratorSpec, Sample, SamplingSettings


def _sample_next(logits_BV: torch.Tensor, sampling: SamplingSettings, gen: torch.Generator):
    """Next tokens and their log-probs under the sampling distribution (temperature, then top-p)."""
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
    tokens = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


class TorchGenerator:
    def __init__(self, spec: GeneratorSpec):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = spec
        self.tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(spec.model_dir, dtype=torch.float32).to(self.device).eval()
        self.vocab_size = self.model.config.vocab_size
        eos = self.model.config.eos_token_id
        eos = eos if isinstance(eos, (list, tuple)) else [eos]
        if self.tokenizer.eos_token_id is not None:
            eos = [*eos, self.tokenizer.eos_token_id]
        self.eos_ids = sorted({e for e in eos if e is not None})
        self.batch_size = int(spec.options.get("batch_size", 256))

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

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingSettings, gen) -> list[Sample]:
        from transformers import DynamicCache

        B = len(prompts)
        max_len = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((B, max_len), pad, dtype=torch.long, device=self.device)
        attention = torch.zeros((B, max_len), dtype=torch.long, device=self.device)
        for i, p in enumerate(prompts):  # left padding
            input_ids[i, max_len - len(p) :] = torch.tensor(p, device=self.device)
            attention[i, max_len - len(p) :] = 1
        cache = DynamicCache()
        out_tokens = [[] for _ in range(B)]
        out_logprobs = [[] for _ in range(B)]
        finish: list[str | None] = [None] * B
        eos = set(self.eos_ids)
        active = list(range(B))  # row r of the running batch is sample active[r]
        step_input = input_ids
        for _ in range(sampling.max_new_tokens):
            position_ids = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_input.shape[1] :]
            logits = self.model(input_ids=step_input, attention_mask=attention, position_ids=position_ids,
                                past_key_values=cache, use_cache=True).logits[:, -1, : self.vocab_size].float()
            tokens, logps = _sample_next(logits, sampling, gen)
            keep = []
            for row, (i, token, logp) in enumerate(zip(active, tokens.tolist(), logps.tolist())):
                out_tokens[i].append(token)
                out_logprobs[i].append(logp)
                if token in eos or (sampling.stop and self._hits_stop(out_tokens[i], sampling.stop)):
                    finish[i] = "stop"
                else:
                    keep.append(row)
            if not keep:
                break
            step_input = tokens[:, None]
            attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                step_input, attention = step_input[index], attention[index]
                active = [active[r] for r in keep]
        return [
            Sample(out_tokens[i], out_logprobs[i], finish[i] or "length",
                   self.tokenizer.decode(out_tokens[i], skip_special_tokens=True))
            for i in range(B)
        ]

    def _hits_stop(self, tokens: list[int], stop: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(tokens[-16:], skip_special_tokens=False)
        return any(s in tail for s in stop)
