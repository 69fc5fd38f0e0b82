"""Blends: ``{corpus or prefix: weight}`` -> what Megatron's ``GPTDatasetConfig`` takes, and the datasets themselves.

    blend = megatron_blend({"finemath-4plus": 0.7, "numinamath-1.5": 0.3}, split="98,1,1", prefix_root="data/tok")
    GPTDatasetConfig(blend=blend.blend, split=blend.split, ...)        # or, all in one:
    train, valid, test = build_gpt_datasets(blend, tokenizer_dir="tok/", seq_length=256, num_samples=(1000, 10, 10))

A key is an indexed-dataset prefix (``PREFIX.bin`` / ``PREFIX.idx`` exist) or a name resolved as
``prefix_root/NAME`` (the ``--output-prefix`` you gave ``python -m data_prep tokenize``). Weights are normalised.
Every prefix must have been tokenized with the same tokenizer (checked through the ``.summary.json`` files).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True)
class MegatronBlend:
    prefixes: tuple[str, ...]
    """Indexed-dataset path prefixes (no .bin / .idx suffix)."""
    weights: tuple[float, ...]
    """Sampling weights, summing to 1, one per prefix."""
    split: str
    """Train / valid / test proportions of every dataset, Megatron's "98,1,1" form."""

    @property
    def blend(self) -> tuple[list[str], list[float]]:
        """The ``blend=`` argument of ``GPTDatasetConfig``."""
        return list(self.prefixes), list(self.weights)

    def config_kwargs(self) -> dict:
        """``GPTDatasetConfig(**blend.config_kwargs(), ...)``."""
        return {"blend": self.blend, "split": self.split}


def _resolve_prefix(key: str, prefix_root: str | Path | None) -> Path:
    candidates = [Path(key)] + ([Path(prefix_root) / key] if prefix_root else [])
    for prefix in candidates:
        if Path(f"{prefix}.bin").is_file() and Path(f"{prefix}.idx").is_file():
            return prefix
    tried = ", ".join(f"{c}.bin/.idx" for c in candidates)
    raise FileNotFoundError(f"blend entry {key!r}: no indexed dataset found (tried {tried}); tokenize it first with "
                            f"python -m data_prep tokenize --corpus {key} --output-prefix "
                            f"{Path(prefix_root or '.') / key} ..., or give its path prefix")


def _check_split(split: str) -> str:
    parts = [p for p in split.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"split {split!r} must be up to three non-negative train,valid,test proportions, e.g. 98,1,1")
    return split


def megatron_blend(weights: Mapping[str, float], split: str = "98,1,1", *,
                   prefix_root: str | Path | None = None) -> MegatronBlend:
    """Resolve ``{corpus or prefix: weight}`` to existing indexed datasets with normalised weights."""
    if not weights:
        raise ValueError("a blend needs at least one {corpus_or_prefix: weight} entry")
    for key, w in weights.items():
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ValueError(f"blend weight of {key!r} must be a positive number, got {w!r}")
    prefixes = [_resolve_prefix(key, prefix_root) for key in weights]
    _check_same_tokenizer(prefixes)
    total = float(sum(weights.values()))
    return MegatronBlend(tuple(str(p) for p in prefixes), tuple(w / total for w in weights.values()),
                         _check_split(split))


def _check_same_tokenizer(prefixes: Sequence[Path]) -> None:
    seen: dict[str, str] = {}
    for prefix in prefixes:
        try:
            summary = json.loads(Path(f"{prefix}.summary.json").read_text())
            seen[str(prefix)] = summary["tokenizer"]["sha256"]
        except (OSError, ValueError, KeyError):
            continue  # built by other tools: nothing to compare
    if len(set(seen.values())) > 1:
        raise ValueError(f"the blend mixes datasets tokenized with different tokenizers: {seen}; re-tokenize them "
                         "with one tokenizer")


class MegatronTokenizerInfo:
    """What ``GPTDataset`` reads from a tokenizer (ids of EOD and pad, vocabulary size, a cache identity), taken
    from a Hugging Face tokenizer directory."""

    def __init__(self, tokenizer_dir: str | Path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        if tokenizer.eos_token_id is None:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has no EOS token (Megatron's EOD)")
        self.vocab_size = len(tokenizer)
        self.eod = self.eos = int(tokenizer.eos_token_id)
        self.pad = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else -1
        self.bos = tokenizer.bos_token_id
        identity = tokenizer.backend_tokenizer.to_str() if tokenizer.is_fast else str(sorted(tokenizer.get_vocab()))
        self.unique_identifiers = OrderedDict(
            [("class", type(self).__name__), ("tokenizer_path", str(Path(tokenizer_dir).resolve())),
             ("sha256", hashlib.sha256(identity.encode()).hexdigest())])


def build_gpt_datasets(blend: MegatronBlend, *, tokenizer_dir: str | Path, seq_length: int,
                       num_samples: Sequence[int | None], seed: int = 1234, cache_dir: str | Path | None = None,
                       **gpt_config):
    """``[train, valid, test]`` GPT datasets of ``blend`` (a split with weight 0 gives None), built by Megatron's
    ``BlendedMegatronDatasetBuilder``; ``gpt_config`` overrides ``GPTDatasetConfig`` fields."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    fields = dict(random_seed=seed, sequence_length=seq_length, tokenizer=MegatronTokenizerInfo(tokenizer_dir),
                  reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                  path_to_cache=str(cache_dir) if cache_dir else None, **blend.config_kwargs())
    fields.update(gpt_config)
    config = GPTDatasetConfig(**fields)
    return BlendedMegatronDatasetBuilder(GPTDataset, list(num_samples), lambda: True, config).build()
