"""Stage-one loop throughput: tokens/s and MFU of `pipeline.pretrain`'s loop vs a bare forward/backward/step of the
same Megatron model and optimizer, alternated in one process (fp32 on CPU, bf16 on GPU).

    python bench/pretrain_throughput.py [--preset tiny] [--seq 256] [--gbs 16] [--mbs 4] [--steps 6] [--rounds 3]

"Loop" is one `Trainer.iterate()`: read the global batch from the GPTDataset, Megatron's schedule
(`get_forward_backward_func`) with the per-token loss, finalize_model_grads, LR scheduler, optimizer step (grad
clip), loss all-reduce, metrics JSONL + TensorBoard, progress bar, the exit-signal all-reduce. "Bare" is the same
DDP model and optimizer fed in-memory tensors: forward with labels, masked loss, backward, optimizer step.
MFU = model FLOPs (megatron_ext.training.train_flops_per_token) / time / the matmul FLOP/s measured here.
Data: the synthetic corpus of `data_prep` (generated and tokenized into a temp dir). Writes
bench/results/pretrain_throughput-<date>-<machine>.json. Target: loop overhead <= 10% (ratio >= 0.90).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import write_results  # noqa: E402


def _data(root: Path) -> tuple[str, str]:
    from data_prep.synthetic import make_synthetic_dataset
    from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus

    data = make_synthetic_dataset(root / "data", seed=0)
    prefix = root / "tokens" / "synthetic"
    tokenize_corpus(TokenizeConfig(corpus="jsonl", tokenizer=str(data.tokenizer), output_prefix=str(prefix),
                                   data_files=(str(data.pretrain),), progress=False))
    return str(data.tokenizer), str(prefix)


def _timed(fn, n: int) -> list[float]:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="pipeline.model_presets name")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--gbs", type=int, default=16, help="global batch (sequences per optimizer step)")
    p.add_argument("--mbs", type=int, default=4, help="micro-batch size")
    p.add_argument("--steps", type=int, default=6, help="timed steps of each kind per round")
    p.add_argument("--rounds", type=int, default=3, help="loop/bare alternations")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: all cores)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))

    from tqdm import tqdm

    from megatron_ext.distributed import init_distributed
    from megatron_ext.training import measure_matmul_flops, microbatches
    from pipeline.pretrain import Trainer
    from pipeline.pretrain_config import PretrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, prefix = _data(Path(tmp))
        cfg = PretrainConfig.from_dict({
            "output_dir": f"{tmp}/run", "model": {"preset": args.preset, "tokenizer_dir": tokenizer},
            "data": {"blend": [prefix], "seq_length": args.seq},
            "schedule": {"train_iters": 100_000, "global_batch_size": args.gbs, "micro_batch_size": args.mbs,
                         "eval_interval": 0},
            "checkpoint": {"interval": 0}, "optim": {"warmup_iters": 10},
        })
        resolved = cfg.validate(1)
        layout = init_distributed(tp=1, pp=1, seed=cfg.seed)
        trainer = Trainer(cfg, resolved, layout, deadline=None)
        bar = tqdm(total=cfg.schedule.train_iters, file=open(os.devnull, "w"))  # as on rank 0, output discarded

        n_micro = args.gbs // args.mbs
        batches = [{k: v.to(layout.device) for k, v in b.items()} for b in microbatches(
            trainer.train_ds, 0, micro_batch_size=args.mbs, num_microbatches=n_micro, dp=1, dp_rank=0)]
        n_tokens = sum(float(b["loss_mask"].sum()) for b in batches)
        model, optimizer = trainer.model, trainer.optimizer

        def bare_step():
            model.zero_grad_buffer()
            optimizer.zero_grad()
            for b in batches:
                losses = model(b["tokens"], b["position_ids"], None, labels=b["labels"])
                ((losses.float() * b["loss_mask"]).sum() / n_tokens).backward()
            optimizer.step()

        loop_times, bare_times = [], []
        _timed(lambda: trainer.iterate(bar), 2)
        _timed(bare_step, 2)
        peaks = [measure_matmul_flops(trainer.dtype, layout.device)]
        for _ in range(args.rounds):
            loop_times += _timed(lambda: trainer.iterate(bar), args.steps)
            bare_times += _timed(bare_step, args.steps)
        peaks.append(measure_matmul_flops(trainer.dtype, layout.device))
        trainer.close()

    tokens_per_step = args.gbs * args.seq
    peak = max(peaks)
    loop_s, bare_s = statistics.median(loop_times), statistics.median(bare_times)
    loop_tps, bare_tps = tokens_per_step / loop_s, tokens_per_step / bare_s
    flops_per_token = trainer.flops_per_token
    results = {
        "config": {"preset": args.preset, "seq_length": args.seq, "global_batch_size": args.gbs,
                   "micro_batch_size": args.mbs, "steps_per_round": args.steps, "rounds": args.rounds,
                   "dtype": str(trainer.dtype), "threads": torch.get_num_threads(),
                   "params": sum(p.numel() for p in model.parameters())},
        "matmul_flops_per_s": peak,
        "model_flops_per_token": flops_per_token,
        "baseline_bare": {"median_step_s": bare_s, "tokens_per_s": bare_tps, "mfu": bare_tps * flops_per_token / peak},
        "loop": {"median_step_s": loop_s, "tokens_per_s": loop_tps, "mfu": loop_tps * flops_per_token / peak},
        "loop_vs_bare_ratio": loop_tps / bare_tps,
        "loop_overhead_pct": 100.0 * (loop_s - bare_s) / bare_s,
        "target": "loop_vs_bare_ratio >= 0.90",
        "step_times_s": {"loop": loop_times, "bare": bare_times},
    }
    path = write_results("pretrain_throughput", results)
    print(f"bare: {bare_tps:,.0f} tokens/s (MFU {results['baseline_bare']['mfu']:.1%}); loop: {loop_tps:,.0f} "
          f"tokens/s (MFU {results['loop']['mfu']:.1%}); loop/bare {results['loop_vs_bare_ratio']:.3f} "
          f"(overhead {results['loop_overhead_pct']:.1f}%); matmul peak {peak / 1e9:.1f} GFLOP/s -> {path}")


if __name__ == "__main__":
    main()
