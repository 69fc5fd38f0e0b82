"""Learner throughput: Megatron-core GPTModel forward+backward tokens/s vs transformers' LlamaForCausalLM of
the same shape and weights, measured alternately in one process (fp32 on CPU, bf16 on GPU).

    python bench/learner_throughput.py [--preset tiny|small|smollm2-135m|llama3.2-3b] [--seq 256] [--batch 8] [--repeats 10]

Writes bench/results/learner_throughput-<date>-<machine>.json. Target on CPU: Megatron >= 0.95x HF.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, time_repeats, write_results  # noqa: E402

SHAPES = {
    # ~5M params: the tiny CPU default's shape
    "tiny": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=8,
                 num_key_value_heads=2, head_dim=32, vocab_size=1024),
    # ~30M params
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                  num_key_value_heads=2, head_dim=64, vocab_size=4096),
    # SmolLM2-135M (the real model of tests and the smollm2_cpu recipe): 9 / 3 heads, 30 layers
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, head_dim=64, vocab_size=49152),
    "llama3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                        num_key_value_heads=8, head_dim=128, vocab_size=128256),
}


def llama_config(preset: str):
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPES[preset], tie_word_embeddings=True, rms_norm_eps=1e-5, max_position_embeddings=131072,
                       rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                        "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                        "original_max_position_embeddings": 8192})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(SHAPES))
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import LlamaForCausalLM

    from megatron_ext.distributed import init_distributed
    from megatron_ext.models import build_model
    from megatron_ext.weights import export_hf_weights

    init_distributed(tp=1, pp=1, seed=0)
    on_gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if on_gpu else torch.float32
    device = torch.device("cuda" if on_gpu else "cpu")
    config = llama_config(args.preset)
    megatron = build_model(config, dtype=dtype)
    hf = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    hf.load_state_dict(dict(export_hf_weights(megatron, include_tied_lm_head=True)), strict=False)
    hf.config._attn_implementation = "sdpa"
    megatron.train()
    hf.train()

    tokens = torch.randint(0, config.vocab_size, (args.batch, args.seq), device=device)
    position_ids = torch.arange(args.seq, device=device).unsqueeze(0).expand_as(tokens)
    labels = torch.roll(tokens, -1, dims=1)

    def sync():
        if on_gpu:
            torch.cuda.synchronize()

    def megatron_step():
        loss = megatron(tokens, position_ids, None, labels=labels).float().mean()
        loss.backward()
        megatron.zero_grad(set_to_none=True)
        sync()

    def hf_step():
        loss = hf(tokens, labels=tokens).loss
        loss.backward()
        hf.zero_grad(set_to_none=True)
        sync()

    megatron_times, hf_times = [], []
    for _ in range(2):
        megatron_step(), hf_step()
    for _ in range(args.repeats):  # alternate so drift on a shared machine hits both equally
        megatron_times += time_repeats(megatron_step, warmup=0, repeats=1)
        hf_times += time_repeats(hf_step, warmup=0, repeats=1)
    n_tokens = args.batch * args.seq
    mega_tps, hf_tps = n_tokens / median(megatron_times), n_tokens / median(hf_times)
    n_params = sum(p.numel() for p in hf.parameters())
    results = {
        "preset": args.preset, "seq": args.seq, "batch": args.batch, "dtype": str(dtype), "params": n_params,
        "megatron_tokens_per_s": mega_tps, "hf_tokens_per_s": hf_tps,
        "ratio_megatron_vs_hf": mega_tps / hf_tps, "target_ratio": 0.95,
        "megatron_step_s": megatron_times, "hf_step_s": hf_times,
    }
    path = write_results("learner_throughput" + ("" if args.preset == "tiny" else f"-{args.preset}"), results)
    print(f"[{args.preset}, {n_params / 1e6:.1f}M params, {args.batch}x{args.seq}, {dtype}] "
          f"Megatron {mega_tps:,.0f} tok/s, HF {hf_tps:,.0f} tok/s -> ratio {mega_tps / hf_tps:.3f} (target >= 0.95)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
