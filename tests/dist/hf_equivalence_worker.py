"""torchrun worker: HF Llama -> Megatron at (tp, pp); compare logits, log-probs, entropy, and the export. The
Megatron model may live on a GPU (tests/test_gpu.py) or the simulated accelerator; the reference runs on the host and
every comparison happens there."""

import json
import sys
from pathlib import Path

import torch


def main():
    hf_dir, out_dir, tp, pp = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=tp, pp=pp, seed=0)
    from megatron.core import parallel_state as ps
    from safetensors.torch import load_file
    from transformers import AutoConfig, LlamaForCausalLM

    from megatron_ext.models import build_model
    from megatron_ext.logprobs import (vocab_parallel_entropy, vocab_parallel_logprobs,
                                       vocab_parallel_logprobs_and_entropy)
    from megatron_ext.schedule import forward_logits
    from megatron_ext.weights import HFCheckpointReader, export_hf_weights, save_hf_checkpoint

    config = AutoConfig.from_pretrained(hf_dir)
    model = build_model(config, tp=tp, pp=pp)
    from megatron_ext.weights import load_hf_weights

    load_hf_weights(model, hf_dir)
    result = {"rank": layout.rank, "tp_rank": layout.tp_rank, "pp_rank": layout.pp_rank}

    g = torch.Generator().manual_seed(7)
    tokens = torch.randint(0, config.vocab_size, (2, 24), generator=g)
    logits_device = forward_logits(model, tokens, micro_batch_size=1)
    if logits_device is not None:
        parts = [torch.empty_like(logits_device) for _ in range(tp)]
        torch.distributed.all_gather(parts, logits_device, group=ps.get_tensor_model_parallel_group())
        full = torch.cat(parts, dim=-1)[..., : config.vocab_size].cpu()
        hf = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            hf_logits = hf(tokens).logits
        result["logits_max_abs_diff"] = (full - hf_logits).abs().max().item()
        result["logits_scale"] = hf_logits.abs().max().item()
        target = tokens[:, 1:]
        hf_logp = torch.log_softmax(hf_logits[:, :-1], -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        target_device = target.to(logits_device.device)
        logp = vocab_parallel_logprobs(logits_device[:, :-1], target_device, vocab_size=config.vocab_size).cpu()
        result["logprobs_max_abs_diff"] = (logp - hf_logp).abs().max().item()
        hf_p = torch.softmax(hf_logits, -1)
        hf_entropy = -(hf_p * torch.log_softmax(hf_logits, -1)).sum(-1)
        entropy = vocab_parallel_entropy(logits_device, vocab_size=config.vocab_size).cpu()
        result["entropy_max_abs_diff"] = (entropy - hf_entropy).abs().max().item()
        joint_logp, joint_entropy = (t.cpu() for t in vocab_parallel_logprobs_and_entropy(
            logits_device[:, :-1], target_device, config.vocab_size))
        result["joint_logprobs_max_abs_diff"] = (joint_logp - hf_logp).abs().max().item()
        result["joint_entropy_max_abs_diff"] = (joint_entropy - hf_entropy[:, :-1]).abs().max().item()

    reader = HFCheckpointReader(hf_dir)
    exported = {n: t.cpu() for n, t in export_hf_weights(model)}
    result["export_names_equal"] = sorted(exported) == sorted(reader.weight_map)
    result["export_missing"] = sorted(set(reader.weight_map) - set(exported))
    result["export_extra"] = sorted(set(exported) - set(reader.weight_map))
    result["export_not_bitwise"] = [n for n, t in exported.items() if n in reader and not torch.equal(t, reader.get(n))]
    with_head = dict(export_hf_weights(model, include_tied_lm_head=True))
    result["lm_head_exported"] = "lm_head.weight" in with_head

    saved = save_hf_checkpoint(model, out_dir / "roundtrip", max_shard_bytes=200_000)
    if saved is not None:
        original = {n: reader.get(n) for n in reader.weight_map}
        back = HFCheckpointReader(saved)
        result["roundtrip_index_sharded"] = (saved / "model.safetensors.index.json").exists()
        result["roundtrip_not_bitwise"] = [n for n in original if n not in back or not torch.equal(original[n], back.get(n))]
        reloaded = LlamaForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()
        ref = LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
        with torch.no_grad():
            result["roundtrip_logits_equal"] = torch.equal(reloaded(tokens).logits, ref(tokens).logits)
    (out_dir / f"rank{layout.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
