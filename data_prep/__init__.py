"""Data for both stages: pretraining corpora -> Megatron indexed datasets, RL question sets, prompt templates,
and the bundled synthetic math data of the tiny default. Entry point: ``python -m data_prep --help``.

- ``corpora``: the corpus registry; ``records``: reading jsonl / parquet / txt / Hugging Face datasets.
- ``tokenize_corpus`` (+ ``encoder``, ``indexed_output``): corpus -> PREFIX.bin / .idx / .summary.json.
- ``blend``: {corpus: weight} -> what ``GPTDatasetConfig`` takes; GPT datasets from it.
- ``questions``: MATH / GSM8K / jsonl -> ``Question`` with gold answers; ``answers``: answer extraction.
- ``templates``: the paper's prompt templates; ``synthetic`` (+ ``synthetic_problems``, ``tiny_tokenizer``).
"""
