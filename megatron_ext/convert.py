"""Convert weights of a registered model family (Llama, Qwen2 / Qwen2.5, Qwen3: megatron_ext.models) between
Hugging Face directories and Megatron distributed checkpoints.

    # HF -> Megatron checkpoint (reshardable: load it later at any TP/PP)
    torchrun --nproc_per_node 2 -m megatron_ext.convert hf-to-megatron --hf-dir HF --out CKPT --tp 2
    # Megatron checkpoint -> HF directory that transformers and vLLM load (any layout, one process is enough)
    python -m megatron_ext.convert megatron-to-hf --checkpoint CKPT/iter_0000000 --out HF_OUT

Run with as many processes as tp x pp (x dp). Without torchrun it runs as a single process. The model family and
layout are checked before any process group starts (an unsupported model_type is refused naming the supported ones).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.errors import add_debug_flag, run_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m megatron_ext.convert", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("hf-to-megatron", help="HF directory -> Megatron distributed checkpoint")
    a.add_argument("--hf-dir", required=True, type=Path)
    a.add_argument("--out", required=True, type=Path, help="checkpoint root; writes OUT/iter_0000000")
    b = sub.add_parser("megatron-to-hf", help="Megatron checkpoint -> HF directory")
    b.add_argument("--checkpoint", required=True, type=Path,
                   help="an iter_* directory, or a root holding latest_checkpointed_iteration.txt")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="dtype of the written tensors (default: as trained)")
    for s in (a, b):
        s.add_argument("--tp", type=int, default=1, help="tensor-parallel size of this run")
        s.add_argument("--pp", type=int, default=1, help="pipeline-parallel size of this run")
    for command_parser in (p, a, b):
        add_debug_flag(command_parser)
    return p


def hf_to_megatron(hf_dir: Path, out: Path, tp: int = 1, pp: int = 1) -> Path:
    from transformers import AutoConfig

    from megatron_ext.checkpoint import save_checkpoint
    from megatron_ext.distributed import init_distributed
    from megatron_ext.models import build_model, validate_model_config
    from megatron_ext.weights import HFCheckpointReader, check_hf_checkpoint, load_hf_weights

    config = AutoConfig.from_pretrained(hf_dir)
    validate_model_config(config, tp, pp)
    check_hf_checkpoint(HFCheckpointReader(hf_dir), config)
    init_distributed(tp=tp, pp=pp)
    model = build_model(config, tp=tp, pp=pp)
    load_hf_weights(model, hf_dir)
    return save_checkpoint(out, 0, model.sharded_state_dict(), hf_config=config, tokenizer_dir=hf_dir)


def megatron_to_hf(checkpoint: Path, out: Path, tp: int = 1, pp: int = 1, dtype: str | None = None) -> Path | None:
    import torch

    from megatron_ext.checkpoint import (COMPLETE_MARKER, LATEST_FILE, find_latest_checkpoint, load_checkpoint,
                                         load_hf_config, validate_checkpoint_dir)
    from megatron_ext.distributed import init_distributed
    from megatron_ext.models import build_model, validate_model_config
    from megatron_ext.weights import save_hf_checkpoint

    if (checkpoint / LATEST_FILE).exists() or not (checkpoint / COMPLETE_MARKER).exists():
        latest = find_latest_checkpoint(checkpoint, resume_option="--checkpoint")
        checkpoint = latest if latest is not None else checkpoint
    checkpoint = validate_checkpoint_dir(checkpoint)
    config = load_hf_config(checkpoint)
    validate_model_config(config, tp, pp)
    init_distributed(tp=tp, pp=pp)
    model = build_model(config, tp=tp, pp=pp)
    state, _ = load_checkpoint(checkpoint, model.sharded_state_dict())
    model.load_state_dict(state, strict=False)
    return save_hf_checkpoint(model, out, tokenizer_dir=checkpoint / "hf_config",
                              dtype=getattr(torch, dtype) if dtype else None)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body():
        import torch.distributed as dist

        if args.command == "hf-to-megatron":
            path = hf_to_megatron(args.hf_dir, args.out, args.tp, args.pp)
        else:
            path = megatron_to_hf(args.checkpoint, args.out, args.tp, args.pp, args.dtype)
        if path is not None and (not dist.is_initialized() or dist.get_rank() == 0):
            print(f"wrote {path}")

    return run_command(body, argv)


if __name__ == "__main__":
    sys.exit(main())
