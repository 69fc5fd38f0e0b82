"""Blends: {corpus: weight} -> GPTDatasetConfig's blend, and Megatron's builder turning it into GPT datasets."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
from data_prep_fixtures import make_big_vocab_tokenizer, make_tokenizer, write_jsonl

from data_prep.blend import build_gpt_datasets, megatron_blend
from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("blend")
    tokenizer = make_tokenizer(root / "tokenizer")
    docs = {"arith": [f"What is {i} + {i % 7}?\n{i} + {i % 7} = {i + i % 7}. The answer is \\boxed{{{i + i % 7}}}."
                      for i in range(300)],
            "prose": [f"Document number {i} talks about algebra and geometry." for i in range(300)]}
    for name, texts in docs.items():
        write_jsonl(root / f"{name}.jsonl", texts)
        tokenize_corpus(TokenizeConfig(corpus="jsonl", data_files=(str(root / f"{name}.jsonl"),),
                                       tokenizer=str(tokenizer), output_prefix=str(root / "tok" / name), workers=1,
                                       progress=False))
    return root, tokenizer


def test_names_and_prefixes_resolve_with_normalised_weights(corpora):
    root, _ = corpora
    blend = megatron_blend({"arith": 3, str(root / "tok" / "prose"): 1}, split="90,5,5", prefix_root=root / "tok")
    assert blend.prefixes == (str(root / "tok" / "arith"), str(root / "tok" / "prose"))
    assert blend.weights == (0.75, 0.25)
    assert blend.config_kwargs() == {"blend": ([str(root / "tok" / "arith"), str(root / "tok" / "prose")], [0.75, 0.25]),
                                     "split": "90,5,5"}


def test_bad_blends_fail_with_the_fix(corpora, tmp_path):
    root, _ = corpora
    with pytest.raises(FileNotFoundError, match=r"blend entry 'finemath-4plus': no indexed dataset found .*"
                                                r"python -m data_prep tokenize --corpus finemath-4plus"):
        megatron_blend({"finemath-4plus": 1.0}, prefix_root=root / "tok")
    with pytest.raises(ValueError, match="weight of 'arith' must be a positive number"):
        megatron_blend({"arith": 0}, prefix_root=root / "tok")
    with pytest.raises(ValueError, match="split '98;2' must be"):
        megatron_blend({"arith": 1}, split="98;2", prefix_root=root / "tok")

    big = make_big_vocab_tokenizer(tmp_path / "big", vocab_size=300)
    write_jsonl(tmp_path / "w.jsonl", ["w5 w6", "w7"])
    tokenize_corpus(TokenizeConfig(corpus="jsonl", data_files=(str(tmp_path / "w.jsonl"),), tokenizer=str(big),
                                   output_prefix=str(root / "tok" / "other"), workers=1, progress=False))
    with pytest.raises(ValueError, match="mixes datasets tokenized with different tokenizers"):
        megatron_blend({"arith": 1, "other": 1}, prefix_root=root / "tok")


def test_blend_builds_gpt_datasets_in_proportion(corpora):
    from megatron.core.datasets.gpt_dataset import GPTDataset

    root, tokenizer = corpora
    blend = megatron_blend({"arith": 3, "prose": 1}, split="90,5,5", prefix_root=root / "tok")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, valid, test = build_gpt_datasets(blend, tokenizer_dir=tokenizer, seq_length=32,
                                                num_samples=(200, 20, 20), seed=7)
    assert len(train) == 200 and len(valid) == 20 and len(test) == 20
    assert all(isinstance(d, GPTDataset) for d in train.datasets) and len(train.datasets) == 2
    counts = Counter(int(train[i]["dataset_id"]) for i in range(len(train)))
    assert abs(counts[0] - 150) <= 2 and abs(counts[1] - 50) <= 2
    sample = train[0]
    assert sample["tokens"].shape == (32,) and (sample["labels"][:-1] == sample["tokens"][1:]).all()
    assert int(sample["tokens"].max()) < 400
