"""torchrun worker: rollout engines ('torch', 'vllm' or both, comma-separated) against the Megatron learner at (tp, pp)
for one model family's checkpoint. After each in-memory weight push (the learner's full HF export, the second and
third after perturbing every weight: in HF space, then loaded back, so that a tied head's copy on the last pipeline
stage moves with the embedding as training keeps it), each engine's log-probs of its sampled tokens must equal the
learner's (fp32).
Every rank's samples are scored by the whole learner (gathered first: at PP > 1 all stages run each forward), on the
last pipeline stage."""

import json
import sys
from pathlib import Path

import torch


def main():
    hf_dir, out_dir, tp, pp = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    engines = sys.argv[5].split(",")
    torch.set_num_threads(1)
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=tp, pp=pp, seed=0)
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from transformers import AutoConfig

    from megatron_ext.logprobs import vocab_parallel_logprobs
    from megatron_ext.models import build_model
    from megatron_ext.schedule import forward_logits
    from megatron_ext.weights import export_hf_weights, load_hf_weights
    from pipeline.rl.engine import EngineSpec, SamplingSettings, build_engine

    config = AutoConfig.from_pretrained(hf_dir)
    model = build_model(config, tp=tp, pp=pp)
    load_hf_weights(model, hf_dir)
    engines_by_name = {name: build_engine(name, EngineSpec(str(hf_dir), seed=layout.rank, max_model_len=128))
                       for name in engines}
    prompts = [[5 + i, 40 + i, 41, 42, 43 + 2 * i] for i in range(3)]
    result = {"rank": layout.rank, "last_stage": ps.is_pipeline_last_stage(),
              "kernels": getattr(getattr(engines_by_name.get("torch"), "decoder", None), "kernels", None) is not None,
              **{name: {"max_abs_diff": [], "tokens_changed": []} for name in engines}}
    previous = {}
    for push in range(3):
        if push > 0:  # stands in for an optimizer step: the same perturbation of every HF tensor on every rank
            perturbed_dir = out_dir / f"perturbed{push}"
            g = torch.Generator().manual_seed(100 + push)
            perturbed = {}
            for name, t in sorted(export_hf_weights(model)):
                t = t.cpu()
                scale = t.std() if t.numel() > 1 and t.std() > 0 else t.abs().mean()
                perturbed[name] = (t + 0.2 * scale * torch.randn(t.shape, generator=g)).contiguous()
            if layout.rank == 0:
                from safetensors.torch import save_file

                perturbed_dir.mkdir()
                save_file(perturbed, str(perturbed_dir / "model.safetensors"), metadata={"format": "pt"})
            dist.barrier()
            load_hf_weights(model, perturbed_dir)
        for name, engine in engines_by_name.items():
            engine.update_weights(export_hf_weights(model, include_tied_lm_head=True))
            groups = engine.generate(prompts, SamplingSettings(max_new_tokens=12, temperature=1.0, n=2, seed=7))
            mine = [(prompt, s.token_ids, s.logprobs) for prompt, group in zip(prompts, groups) for s in group]
            everyone = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, mine)
            worst = 0.0
            for prompt, token_ids, engine_logp in (s for rank_samples in everyone for s in rank_samples):
                tokens = torch.tensor([prompt + token_ids])
                logits = forward_logits(model, tokens)
                if logits is not None:
                    logp = vocab_parallel_logprobs(logits[:, :-1], tokens[:, 1:].to(logits.device), config.vocab_size)
                    logp = logp[0, len(prompt) - 1 :].cpu()
                    worst = max(worst, (logp - torch.tensor(engine_logp)).abs().max().item())
            sampled = [t for _, t, _ in mine]
            result[name]["max_abs_diff"].append(worst)
            result[name]["tokens_changed"].append(name in previous and sampled != previous[name])
            previous[name] = sampled
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
