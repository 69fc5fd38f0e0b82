"""Pieces of a Megatron-core training loop that megatron-core leaves to Megatron-LM: GPT datasets from a blend,
the data-parallel micro-batch split, RNG state for checkpoints, and FLOP accounting for MFU.

- `parse_blend(spec)`: a blend as Megatron's `--data-path` list (`["prefix", ...]` or `["w1", "prefix1", ...]`),
  a `{prefix: weight}` dict, or `[[weight, prefix], ...]`, checked against the `.bin` / `.idx` files.
- `build_gpt_datasets(...)`: train / validation `GPTDataset`s (blended when the blend has several sources)
  through `BlendedMegatronDatasetBuilder`, with Megatron's document-boundary handling (`eod_mask_loss`,
  `reset_attention_mask`).
- `microbatches(dataset, first_sample, ...)`: this data-parallel rank's micro-batches of one global batch, in
  the order of Megatron-LM's `MegatronPretrainingSampler`.
- `rng_state()` / `set_rng_state()` / `rng_sharded_object()`: Python, NumPy, torch (CPU and CUDA) and Megatron
  tracker RNG states, one object per rank in a distributed checkpoint.
- `train_flops_per_token()`, `measure_matmul_flops()`: model FLOPs and the machine's matmul FLOP/s.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

# ---- blends and datasets -------------------------------------------------------------------------------------


def parse_blend(spec, field: str = "data.blend") -> tuple[list[str], list[float] | None]:
    """(prefixes, weights or None) from the accepted blend spellings; raises ValueError naming `field`."""
    if isinstance(spec, (str, Path)):
        spec = [str(spec)]
    if isinstance(spec, dict):
        prefixes, weights = [str(p) for p in spec], [float(w) for w in spec.values()]
    elif spec and all(isinstance(item, (list, tuple)) for item in spec):
        if any(len(item) != 2 for item in spec):
            raise ValueError(f"{field}: each [weight, prefix] pair must have two elements, got {spec!r}")
        weights, prefixes = [float(w) for w, _ in spec], [str(p) for _, p in spec]
    elif spec and all(isinstance(item, (str, Path, int, float)) for item in spec):
        items = [str(item) for item in spec]
        if len(items) % 2 == 0 and all(_is_number(w) for w in items[0::2]):
            weights, prefixes = [float(w) for w in items[0::2]], items[1::2]
        else:
            weights, prefixes = None, items
    else:
        raise ValueError(f"{field} is empty or malformed ({spec!r}): give dataset prefixes (PATH for PATH.bin/.idx), "
                         "optionally with weights: ['0.7', 'a', '0.3', 'b'], {'a': 0.7, 'b': 0.3} or [[0.7, 'a'], ...]")
    if weights is not None and (any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ValueError(f"{field}: weights {weights} must be >= 0 with a positive sum")
    for prefix in prefixes:
        for suffix in (".bin", ".idx"):
            if not Path(prefix + suffix).is_file():
                raise ValueError(f"{field}: {prefix + suffix} does not exist; a prefix names a tokenized Megatron "
                                 "dataset (PREFIX.bin + PREFIX.idx, as written by `python -m data_prep tokenize`)")
    return prefixes, weights


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class DatasetTokenizer:
    """The little of a tokenizer that GPTDataset needs: vocab size, end-of-document id, a cache identity."""

    def __init__(self, vocab_size: int, eod: int, name: str = ""):
        self.vocab_size = vocab_size
        self.eod = eod
        self.unique_identifiers = OrderedDict(cls=type(self).__name__, name=name, vocab_size=vocab_size, eod=eod)


def build_gpt_datasets(
    *,
    blend: tuple[list[str], list[float] | None],
    valid_blend: tuple[list[str], list[float] | None] | None,
    split: str,
    seq_length: int,
    seed: int,
    tokenizer: DatasetTokenizer,
    train_samples: int,
    valid_samples: int,
    eod_mask_loss: bool,
    reset_attention_mask: bool,
    cache_dir: str | Path,
):
    """(train, valid) datasets; valid is None when no validation data is configured. Collective (rank 0 builds
    the index caches first, the others read them)."""
    import torch.distributed as dist
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    blends = dict(blend=blend, split=split)
    if valid_blend is not None:
        blends = dict(blend_per_split=[blend, valid_blend, None])
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, tokenizer=tokenizer, path_to_cache=str(cache_dir),
        reset_position_ids=False, reset_attention_mask=reset_attention_mask, eod_mask_loss=eod_mask_loss,
        create_attention_mask=reset_attention_mask, mid_level_dataset_surplus=0.005, **blends,
    )
    sizes = [train_samples, valid_samples, 0]  # weighted blends need every size; split "x,y,0" builds no test set
    train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, config).build()
    if dist.is_initialized():
        dist.barrier()
    if train is None or len(train) < train_samples:
        raise ValueError(f"the blend yields {0 if train is None else len(train)} training sequences of "
                         f"{seq_length} tokens, fewer than the {train_samples} the run needs; check data.split")
    return train, (valid if valid is not None and len(valid) > 0 else None)


def microbatches(dataset, first_sample: int, *, micro_batch_size: int, num_microbatches: int, dp: int,
                 dp_rank: int) -> list[dict]:
    """This DP rank's micro-batches of the global batch starting at sample `first_sample`: micro-batch j holds
    samples first + j*mbs*dp + dp_rank*mbs + [0, mbs) (Megatron-LM's MegatronPretrainingSampler order)."""
    out = []
    for j in range(num_microbatches):
        start = first_sample + j * micro_batch_size * dp + dp_rank * micro_batch_size
        samples = [dataset[i] for i in range(start, start + micro_batch_size)]
        # a BlendedDataset adds a numpy "dataset_id" to each sample
        batch = {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}
        if "attention_mask" in batch:  # [b, 1, s, s] True where attention is masked (Megatron's convention)
            batch["attention_mask"] = batch["attention_mask"].bool()
        out.append(batch)
    return out


# ---- RNG state -----------------------------------------------------------------------------------------------


def rng_state() -> dict:
    from megatron.core import tensor_parallel

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def rng_sharded_object(layout, state: dict | None = None):
    """One RNG state per rank, keyed by the (pp, tp, dp) layout: it loads only at the layout it was saved at."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject("rng_state", state if state is not None else rng_state(),
                         (layout.pp, layout.tp, layout.dp), (layout.pp_rank, layout.tp_rank, layout.dp_rank),
                         replica_id=0)


# ---- FLOPs ---------------------------------------------------------------------------------------------------


def train_flops_per_token(hf_config, seq_length: int, padded_vocab: int | None = None) -> float:
    """Matmul FLOPs of one token's forward + backward (3x forward) in a causal decoder of any registered family
    (megatron_ext.models) with sequences of `seq_length`: q/k/v/o projections (at the config's head_dim), SwiGLU
    MLP, attention scores and values (causal: a token attends to (s+1)/2 positions on average) and the output layer
    (padded vocabulary, as computed). Biases and norms (Qwen2's q/k/v bias, Qwen3's q/k norm) are not matmuls."""
    from megatron_ext.models import head_dim

    h, ffn = hf_config.hidden_size, hf_config.intermediate_size
    hd, nq, nkv = head_dim(hf_config), hf_config.num_attention_heads, hf_config.num_key_value_heads
    vocab = padded_vocab or hf_config.vocab_size
    per_layer = 2 * h * (nq + 2 * nkv) * hd + 2 * nq * hd * h + 2 * 3 * h * ffn
    attention = 2 * 2 * nq * hd * (seq_length + 1) / 2
    forward = hf_config.num_hidden_layers * (per_layer + attention) + 2 * h * vocab
    return 3.0 * forward


def measure_matmul_flops(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", size: int = 1024,
                         min_seconds: float = 0.5) -> float:
    """Achieved FLOP/s of square matmuls of `size` in `dtype` on `device` with the current thread setting."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        a @ b
    sync()
    n, t0 = 0, time.perf_counter()
    while True:
        a @ b
        n += 1
        if n % 4 == 0:
            sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= min_seconds:
                return 2.0 * size**3 * n / elapsed
