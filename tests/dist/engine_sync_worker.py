"""torchrun worker: after each in-memory weight push, the rollout engine's log-probs of its sampled tokens
must equal the Megatron learner's (fp32). Engine: 'vllm' or 'torch'; learner at TP=tp. Device-clean: the learner
may be on a GPU (tests/test_gpu.py) or the simulated accelerator; comparisons happen on the host."""

import json
import sys
from pathlib import Path

import torch


def main():
    hf_dir, out_dir, tp, engine_name = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=tp, pp=1, seed=0)
    from megatron.core import parallel_state as ps
    from transformers import AutoConfig

    from megatron_ext.models import build_model
    from megatron_ext.logprobs import vocab_parallel_logprobs
    from megatron_ext.schedule import forward_logits
    from megatron_ext.weights import export_hf_weights, load_hf_weights
    from pipeline.rl.engine import EngineSpec, SamplingSettings, build_engine

    config = AutoConfig.from_pretrained(hf_dir)
    model = build_model(config, tp=tp)
    load_hf_weights(model, hf_dir)
    engine = build_engine(engine_name, EngineSpec(str(hf_dir), seed=layout.rank, max_model_len=128))
    prompts = [[5 + i, 40 + i, 41, 42, 43 + 2 * i] for i in range(3)]
    result = {"rank": layout.rank, "max_abs_diff": [], "logits_scale": [], "tokens_changed": []}
    previous = None
    for push in range(3):
        if push > 0:  # stands in for an optimizer step: same perturbation of the full model on every rank
            # 20% of each weight's spread (norm gains: of their value), far beyond a real step, within its scale:
            # absolute noise (0.2, ten times the init std) blew the logits up to where fp32 alone errs by 1e-4
            g = torch.Generator().manual_seed(100 + push)
            with torch.no_grad():
                for p in model.parameters():
                    scale = p.std() if p.numel() > 1 and p.std() > 0 else p.abs().mean()
                    p.add_(0.2 * scale * torch.randn(p.shape, generator=g).to(p.device))
        engine.update_weights(export_hf_weights(model, include_tied_lm_head=True))
        groups = engine.generate(prompts, SamplingSettings(max_new_tokens=12, temperature=1.0, n=2, seed=7))
        worst, scale = 0.0, 0.0
        for prompt, group in zip(prompts, groups):
            for s in group:
                tokens = torch.tensor([prompt + s.token_ids])
                logits = forward_logits(model, tokens)
                scale = max(scale, logits.abs().max().item())
                logp = vocab_parallel_logprobs(logits[:, :-1], tokens[:, 1:].to(logits.device), config.vocab_size)
                logp = logp[0, len(prompt) - 1 :].cpu()
                worst = max(worst, (logp - torch.tensor(s.logprobs)).abs().max().item())
        sampled = [s.token_ids for g_ in groups for s in g_]
        result["max_abs_diff"].append(worst)
        result["logits_scale"].append(scale)
        result["tokens_changed"].append(previous is not None and sampled != previous)
        previous = sampled
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
