"""Evaluation and the paper's diagnostics: benchmark loaders (``benchmarks``), the generate-function protocol and
a transformers backend (``generation``), grading and pass@k (``scoring``), the evaluation run (``evaluate``),
self-reflection / length / std-weighting analyses (``diagnostics``), PNG plots (``plots``) and the run report
(``report``). Command line: ``python -m pipeline.eval --help``.
"""
