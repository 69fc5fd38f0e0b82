"""torchrun worker: one model family's checkpoint at (tp, pp), everything the learner side must get right, in one
launch: logits / log-probs against transformers' own model, the HF export (names and bits), a saved HF directory
(bits, reloaded logits), gradients of a log-prob loss against transformers' autograd (through Megatron DDP and its
finalize step: TP-replicated q/k norms must have their TP-summed gradient), and the RL update in the shared-prompt
layout against the per-response layout (metrics and every gradient)."""

import json
import sys
from pathlib import Path

import torch


def logits_and_export(model, config, hf_dir: Path, out_dir: Path, tokens, result: dict) -> None:
    from megatron.core import parallel_state as ps
    from transformers import AutoModelForCausalLM

    from megatron_ext.logprobs import vocab_parallel_logprobs
    from megatron_ext.schedule import forward_logits
    from megatron_ext.weights import HFCheckpointReader, export_hf_weights, save_hf_checkpoint

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        hf_logits = hf(tokens).logits
    logits = forward_logits(model, tokens, micro_batch_size=1)
    if logits is not None:
        tp = ps.get_tensor_model_parallel_world_size()
        parts = [torch.empty_like(logits) for _ in range(tp)]
        torch.distributed.all_gather(parts, logits, group=ps.get_tensor_model_parallel_group())
        full = torch.cat(parts, dim=-1)[..., : config.vocab_size].cpu()
        result["logits_max_abs_diff"] = (full - hf_logits).abs().max().item()
        result["logits_scale"] = hf_logits.abs().max().item()
        target = tokens[:, 1:]
        hf_logp = torch.log_softmax(hf_logits[:, :-1], -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        logp = vocab_parallel_logprobs(logits[:, :-1], target.to(logits.device), vocab_size=config.vocab_size).cpu()
        result["logprobs_max_abs_diff"] = (logp - hf_logp).abs().max().item()

    reader = HFCheckpointReader(hf_dir)
    exported = {n: t.cpu() for n, t in export_hf_weights(model)}
    result["export_missing"] = sorted(set(reader.weight_map) - set(exported))
    result["export_extra"] = sorted(set(exported) - set(reader.weight_map))
    result["export_not_bitwise"] = [n for n, t in exported.items() if n in reader and not torch.equal(t, reader.get(n))]
    result["exported_names"] = sorted(exported)
    saved = save_hf_checkpoint(model, out_dir / "roundtrip", max_shard_bytes=100_000)
    if saved is not None:
        back = HFCheckpointReader(saved)
        result["roundtrip_index_sharded"] = (saved / "model.safetensors.index.json").exists()
        result["roundtrip_not_bitwise"] = [n for n in reader.weight_map
                                           if n not in back or not torch.equal(reader.get(n), back.get(n))]
        result["roundtrip_extra"] = sorted(set(back.weight_map) - set(reader.weight_map))
        reloaded = AutoModelForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()
        with torch.no_grad():
            result["roundtrip_logits_equal"] = torch.equal(reloaded(tokens).logits, hf_logits)


def gradients_vs_transformers(model, config, hf_dir: Path, tokens, result: dict) -> None:
    """d/dW of sum(weight_t * log p(token_t)) through Megatron (2 micro-batches, DDP + finalize_model_grads) vs
    transformers, per HF tensor (exported under HF names, so the layout conversion applies to the gradients)."""
    from megatron.core import parallel_state as ps
    from transformers import AutoModelForCausalLM

    from megatron_ext.logprobs import vocab_parallel_logprobs
    from megatron_ext.schedule import forward_backward, wrap_with_ddp
    from megatron_ext.weights import export_hf_weights

    weights = torch.randn(tokens.shape[0], tokens.shape[1] - 1, generator=torch.Generator().manual_seed(3))
    ddp = wrap_with_ddp(model)
    ddp.zero_grad_buffer()
    model.train()

    def loss_fn(logits, mb):
        row = mb["row"]
        logp = vocab_parallel_logprobs(logits[:, :-1], mb["tokens"][:, 1:], vocab_size=config.vocab_size)
        return (logp * weights[row : row + 1].to(logp.device)).sum(), {}

    forward_backward(ddp, [{"tokens": tokens[i : i + 1], "row": i} for i in range(tokens.shape[0])], loss_fn,
                     forward_only=False)
    with torch.no_grad():
        originals = {}
        for name, p in model.named_parameters():
            originals[name] = p.data
            p.data = p.main_grad.to(p.dtype)
        grads = {n: t.cpu().clone() for n, t in export_hf_weights(model)}
        for name, p in model.named_parameters():
            p.data = originals[name]
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    logp = torch.log_softmax(hf(tokens).logits[:, :-1].float(), -1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    (logp * weights).sum().backward()
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    if config.tie_word_embeddings:
        hf_grads.pop("lm_head.weight", None)
    diffs = {n: ((grads[n] - g).abs().max() / g.abs().max().clamp(min=1e-12)).item() for n, g in hf_grads.items()
             if n in grads}
    result["grad_compared"] = len(diffs)
    result["grad_missing"] = sorted(set(hf_grads) - set(grads))
    result["grad_worst_relative_diff"] = max(diffs.values())
    result["grad_worst"] = max(diffs, key=diffs.get)
    result["is_last_stage"] = ps.is_pipeline_last_stage()


def shared_prompt_update(hf_dir: Path, layout, tp: int, pp: int, result: dict) -> None:
    """The RL update (on-policy, Dr. GRPO) with shared_prompt_update on and off: same metrics, same gradients."""
    from megatron_ext import shared_prefix
    from pipeline.rl.config import RLConfig
    from pipeline.rl.learner import Learner
    from dist.rollout_fixtures import mixed_length_batch

    batch = mixed_length_batch()
    calls = {"n": 0}
    attention = shared_prefix.attention

    def counted(*args, **kwargs):
        calls["n"] += 1
        return attention(*args, **kwargs)

    shared_prefix.attention = counted
    runs = {}
    for shared in (False, True):
        cfg = RLConfig(model_dir=str(hf_dir), train_questions="unused", lr=1e-3, max_new_tokens=16, group_size=3,
                       micro_batch_size=3, bf16=False, tp=tp, pp=pp, shared_prompt_update=shared,
                       minibatches_per_step=1)
        learner = Learner(cfg, layout, str(hf_dir))
        calls["n"] = 0
        metrics = learner.update(batch, num_responses_global=batch.size,
                                num_tokens_global=int(batch.response_mask_BS.sum()))
        grads = torch.cat([p.main_grad.flatten() for p in learner.model.parameters()])
        runs[shared] = (metrics, grads, calls["n"], learner._shared_prompt_microbatches(batch) is not None)
    shared_prefix.attention = attention
    (m0, g0, n0, _), (m1, g1, n1, used) = runs[False], runs[True]
    result["shared"] = {
        "metrics": m0, "metric_diffs": {k: abs(m0[k] - m1[k]) for k in m0},
        "grad_rel_diff": ((g0 - g1).abs().max() / g0.abs().max()).item(), "grad_scale": g0.abs().max().item(),
        "shared_layout_used": used, "shared_attention_calls": n1, "plain_attention_calls": n0,
    }


def main():
    hf_dir, out_dir, tp, pp = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=tp, pp=pp, seed=0)
    from transformers import AutoConfig

    from megatron_ext.models import build_model
    from megatron_ext.weights import load_hf_weights

    config = AutoConfig.from_pretrained(hf_dir)
    model = build_model(config, tp=tp, pp=pp)
    load_hf_weights(model, hf_dir)
    result = {"rank": layout.rank, "tp_rank": layout.tp_rank, "pp_rank": layout.pp_rank,
              "qk_layernorm": bool(model.config.qk_layernorm), "add_qkv_bias": bool(model.config.add_qkv_bias)}
    tokens = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(7))
    logits_and_export(model, config, hf_dir, out_dir, tokens, result)
    gradients_vs_transformers(model, config, hf_dir, tokens, result)
    del model
    shared_prompt_update(hf_dir, layout, tp, pp, result)
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
