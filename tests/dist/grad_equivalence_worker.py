"""torchrun worker (1 rank): the gradient of a log-prob loss through Megatron's local layers (with
megatron_ext.local_kernels' SwiGLU, RoPE and RMSNorm) against transformers' autograd gradient, per HF-named weight; and
the LM loss (labels=...) against Megatron's own vocab-parallel kernel."""

import json
import sys
from pathlib import Path

import torch


def main():
    hf_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    from megatron_ext.distributed import init_distributed

    init_distributed(tp=1, pp=1, seed=0)
    import megatron.core.transformer.attention as attention
    from transformers import AutoConfig, LlamaForCausalLM

    from megatron_ext.models import build_model
    from megatron_ext.local_kernels import RMSNorm, SwiGLU
    from megatron_ext.weights import export_hf_weights, load_hf_weights

    config = AutoConfig.from_pretrained(hf_dir)
    model = build_model(config)
    load_hf_weights(model, hf_dir)
    hf = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(11)
    tokens = torch.randint(0, config.vocab_size, (3, 20), generator=g)
    weights = torch.randn(3, 19, generator=g)

    def loss_of(logits):
        logp = torch.log_softmax(logits[:, :-1, : config.vocab_size].float(), -1)
        return (logp.gather(-1, tokens[:, 1:, None]).squeeze(-1) * weights).sum()

    position_ids = torch.arange(tokens.shape[1]).expand_as(tokens)
    loss_of(model(tokens, position_ids, None)).backward()
    loss_of(hf(tokens).logits).backward()
    from megatron.core import tensor_parallel

    labels = torch.roll(tokens, -1, dims=1)
    with torch.no_grad():
        lm_loss = model(tokens, position_ids, None, labels=labels)  # [b, s] through the installed cross entropy
        model_logits = model(tokens, position_ids, None).transpose(0, 1).contiguous()  # [s, b, padded vocab]
        reference_loss = tensor_parallel.vocab_parallel_cross_entropy.__wrapped_original__(
            model_logits, labels.transpose(0, 1).contiguous()).transpose(0, 1)
        logits = torch.randn(5, 2, 64, generator=g)
        target = torch.randint(0, 64, (5, 2), generator=g)
        ours = tensor_parallel.vocab_parallel_cross_entropy(logits, target)
        megatrons = tensor_parallel.vocab_parallel_cross_entropy.__wrapped_original__(logits.clone(), target)
    for p in model.parameters():  # export the gradients under HF names: the weights' layout conversion applies
        p.data = p.grad
    megatron_grads = dict(export_hf_weights(model, include_tied_lm_head=False))
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if n in megatron_grads}
    diffs = {n: ((megatron_grads[n] - hf_grads[n]).abs().max() / hf_grads[n].abs().max().clamp(min=1e-12)).item()
             for n in hf_grads}
    result = {
        "lm_loss_vs_megatron_kernel": (lm_loss - reference_loss).abs().max().item(),
        "ce_vs_megatron_kernel": (ours - megatrons).abs().max().item(),
        "uses_swiglu": all(isinstance(layer.mlp.activation_func, SwiGLU) for layer in model.decoder.layers),
        "uses_rms_norm": sum(isinstance(m, RMSNorm) for m in model.modules()) == 2 * config.num_hidden_layers + 1,
        "uses_rope": hasattr(attention.apply_rotary_pos_emb, "__wrapped_original__"),
        "compared": len(diffs), "expected": len(megatron_grads),
        "worst_relative_diff": max(diffs.values()), "worst": max(diffs, key=diffs.get),
    }
    (out_dir / "rank0.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
