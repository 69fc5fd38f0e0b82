"""Tiny models of each registered family for tests and demos (random weights, built on the fly): Llama-3.2-shaped,
Qwen2 / Qwen2.5 (q/k/v bias) and Qwen3 (q/k norm, explicit head_dim), with transformers' own config classes."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_llama_config(*, tied: bool = True, vocab_size: int = 250, num_layers: int = 4, **overrides):
    """Llama-3.2 features at toy size: tied embeddings, GQA 3:1, llama3 rope scaling."""
    from transformers import LlamaConfig

    fields = dict(
        vocab_size=vocab_size,
        hidden_size=96,
        intermediate_size=160,
        num_hidden_layers=num_layers,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
        rms_norm_eps=1e-5,
        initializer_range=0.1,
        max_position_embeddings=8192 * 4,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=1,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def tiny_qwen2_config(*, tied: bool = False, vocab_size: int = 250, num_layers: int = 2, **overrides):
    """Qwen2.5 features at toy size: q/k/v bias, GQA 2:1, RoPE theta 10000 (Qwen2.5-Math's), untied by default
    (Qwen2.5-Math-7B; 1.5B is tied). head_dim 32 (hidden / heads: Qwen2 has no head_dim field; vLLM's CPU attention
    needs >= 32)."""
    from transformers import Qwen2Config

    fields = dict(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=192, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6, initializer_range=0.1,
        max_position_embeddings=4096, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        use_sliding_window=False, sliding_window=4096, max_window_layers=num_layers,
    )
    fields.update(overrides)
    return Qwen2Config(**fields)


def tiny_qwen3_config(*, tied: bool = True, vocab_size: int = 250, num_layers: int = 2, **overrides):
    """Qwen3 dense features at toy size: per-head q/k RMSNorm, no bias, explicit head_dim 32 != hidden / heads
    (96 / 4 = 24), GQA 2:1, RoPE theta 1e6, tied (as Qwen3-1.7B)."""
    from transformers import Qwen3Config

    fields = dict(
        vocab_size=vocab_size, hidden_size=96, intermediate_size=160, num_hidden_layers=num_layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-6, initializer_range=0.1,
        max_position_embeddings=4096, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        attention_bias=False, use_sliding_window=False, max_window_layers=num_layers,
    )
    fields.update(overrides)
    return Qwen3Config(**fields)


def tiny_config(family: str, **overrides):
    """The tiny config of a family by name: 'llama', 'qwen2' or 'qwen3'."""
    return {"llama": tiny_llama_config, "qwen2": tiny_qwen2_config, "qwen3": tiny_qwen3_config}[family](**overrides)


def save_random_model(out_dir: str | Path, config, seed: int = 0, max_shard_size: str | None = None) -> Path:
    """A random causal LM of the config's family saved as safetensors, with every norm weight (layer norms, Qwen3's
    q/k norms) and every bias (Qwen2's q/k/v) perturbed: transformers initialises norms to one and biases to zero,
    so a converter or engine that dropped or misplaced them would still look right without this."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    out_dir = Path(out_dir)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out_dir, **kwargs)
    return out_dir


save_random_llama = save_random_model
"""The name the Llama tests use (any family's config works)."""


def save_char_tokenizer(out_dir: str | Path, vocab_size: int = 250) -> Path:
    """A character-level HF tokenizer (no training, no network) with <|endoftext|> as EOS (id 1) and pad (0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<|endoftext|>": 1}
    for ch in chars:
        vocab[ch] = len(vocab)
    for i in range(len(vocab), vocab_size):
        vocab[f"<extra_{i}>"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<pad>")
    fast.save_pretrained(out_dir)
    return Path(out_dir)


def addition_questions(n: int, seed: int, max_operand: int = 9) -> list[dict]:
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
        out.append({"question": f"What is {a} + {b}? ", "answer": str(a + b)})
    return out


def save_warm_addition_model(out_dir: str | Path, *, steps: int = 120, seed: int = 0) -> Path:
    """A tiny policy that already answers 'What is a + b? \\boxed{c}' sometimes right (a few seconds of SFT on
    noisy targets), so RL tests see non-zero, non-constant rewards. Char tokenizer, vLLM-compatible shapes."""
    import random

    from transformers import AutoTokenizer, LlamaForCausalLM

    out_dir = Path(out_dir)
    save_random_llama(out_dir, tiny_llama_config(hidden_size=192, head_dim=32, num_layers=2), seed=seed)
    save_char_tokenizer(out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = LlamaForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        texts = []
        for q in addition_questions(32, rng.randint(0, 10**9)):
            wrong = int(q["answer"]) + rng.choice([-1, 1])
            answer = q["answer"] if rng.random() < 0.5 else str(wrong)  # noisy: leaves room for RL
            texts.append(q["question"] + "\\boxed{" + answer + "}" + tok.eos_token)
        batch = tok(texts, padding=True, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out_dir)
    return out_dir
