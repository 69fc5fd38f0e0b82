"""A small byte-level BPE tokenizer trained locally with ``tokenizers``, saved as a Hugging Face tokenizer directory.

Digits are always single tokens (so arithmetic is learnable by a tiny model); BOS ``<|begin_of_text|>`` is added
to every encoded text, as Llama-3's tokenizer does, and ``<|endoftext|>`` is EOS (also the EOD appended to each
pretraining document). ``AutoTokenizer.from_pretrained(dir)`` loads it offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

BOS, EOS, PAD = "<|begin_of_text|>", "<|endoftext|>", "<|pad|>"
SPECIAL_TOKENS = (BOS, EOS, PAD)
"""Ids 0, 1, 2, in this order."""
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)


def train_tiny_tokenizer(texts: Iterable[str], out_dir: str | Path, *, vocab_size: int = 1024) -> Path:
    """Train on ``texts`` and save to ``out_dir``. The vocabulary may end smaller when the texts have few merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size must be >= {MIN_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special tokens), "
                         f"got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=4096)
    out_dir = Path(out_dir)
    fast.save_pretrained(out_dir)
    _check_saved(out_dir)
    return out_dir


def _check_saved(out_dir: Path) -> None:
    """Reload the directory the way every later stage will (offline ``AutoTokenizer``) and check its specials."""
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(out_dir), local_files_only=True)
    ids = loaded("1 + 23 = 24")["input_ids"]
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == SPECIAL_TOKENS, "special tokens lost on reload"
    assert ids[0] == loaded.bos_token_id and loaded.decode(ids, skip_special_tokens=True) == "1 + 23 = 24", ids
