"""Evaluate a model on benchmark sets: generate, grade, summarise, write results.json / results.md /
generations.jsonl. ``evaluate(config, generate)`` takes any ``GenerateFn``; ``build_generate`` makes one from
the config's backend registry. The template study runs the same evaluation once per template.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cli.config import at_least, check
from data_prep.templates import TEMPLATES, check_template, get_template
from pipeline.eval.benchmarks import PAPER_SUITE, BenchmarkRef, Question, load_benchmark, parse_benchmark, suite_refs
from pipeline.eval.generation import GenerateFn
from pipeline.eval.scoring import (GradeFn, average, grade_records, markdown_table, results_markdown, reward_grader,
                                   summarize)


@dataclass(frozen=True)
class EvalConfig:
    model: str = ""
    """HF model directory for the generation backend (also the label in results.json)."""
    benchmarks: tuple[str, ...] = ()
    """Benchmarks as NAME=PATH (or NAME:PATH): aime24, amc, math500, minerva, olympiadbench, synthetic, generic."""
    benchmark_file: str = ""
    """A JSON file mapping benchmark names to paths, e.g. {"math500": "/data/math500.jsonl", "amc": "/data/amc"};
    added to ``benchmarks``."""
    suite: str = ""
    """The authors' evaluation suite: one save_to_disk DatasetDict directory with splits aime, amc, math,
    minerva, olympiad_bench; adds the paper's five benchmarks."""
    template: str = "qwen_math"
    """Prompt template: r1, qwen_math, none, or chat (the model's own chat template) (data_prep.templates)."""
    system_prompt: str = ""
    """With template=chat: a system turn before each question (empty: none, or the chat template's own default)."""
    max_new_tokens: int = dataclasses.field(default=3000, metadata=at_least(1))
    """Generation budget per response (the paper's evaluation: 3000)."""
    temperature: float = dataclasses.field(default=0.0, metadata=at_least(0.0))
    """0 is greedy decoding (the paper's setting); use > 0 with n > 1 for pass@k."""
    top_p: float = 1.0
    """Nucleus sampling mass when sampling."""
    n: int = dataclasses.field(default=1, metadata=at_least(1))
    """Responses per question."""
    pass_k: tuple[int, ...] = (1,)
    """k values of the unbiased pass@k estimator; each must be <= n."""
    seed: int = 0
    """Sampling seed (each generate call adds its first question's index)."""
    max_questions: int = dataclasses.field(default=0, metadata=at_least(0))
    """Evaluate only the first this many questions of each benchmark; 0 means all."""
    chunk_size: int = dataclasses.field(default=64, metadata=at_least(1))
    """Questions per generate call: the progress bar advances per chunk."""
    truncated_scores_zero: bool = False
    """Score truncated responses 0 (the RL reward's rule). The authors' evaluation grades their text anyway."""
    grader_workers: int = dataclasses.field(default=2, metadata=at_least(1))
    """Grading worker processes (pipeline.rl.reward.RewardGrader)."""
    verifier: str = "math_verify"
    """Grader (pipeline.rl.grading.VERIFIERS): math_verify (what the authors' evaluate_model.py grades the paper's
    tables with), fast (their default training verifier; a training run's eval/accuracy uses its own `verifier`,
    so `--verifier fast` reproduces it), or lenient (this project's own, more lenient grader). Recorded in
    results.json."""
    backend: str = "hf"
    """Generation backend: a GENERATE_BACKENDS name or 'module:callable' taking (model_dir, **backend_options)."""
    backend_options: dict = dataclasses.field(default_factory=dict)
    """Backend settings, e.g. {'batch_size': 32} for hf."""
    output_dir: str = "outputs/eval"
    """results.json, results.md and generations.jsonl are written here."""

    def __post_init__(self):
        check(self)  # every field's type and declared range
        check_template(self.template, self.system_prompt)
        from pipeline.rl.grading import get_verifier

        get_verifier(self.verifier)
        self.refs()
        if not self.benchmarks and not self.suite and not self.benchmark_file:
            raise ValueError("no benchmarks: pass benchmarks=('math500=PATH', ...) (CLI: --benchmark NAME=PATH), "
                             "benchmark_file=JSON or suite=DIR (CLI: --suite DIR)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must be in (0, 1]")
        if self.temperature == 0 and self.n > 1:
            raise ValueError(f"greedy decoding (temperature 0) gives {self.n} identical responses; set temperature "
                             "> 0 (e.g. 0.6 or 1.0) for pass@k, or n=1")
        bad = [k for k in self.pass_k if not 1 <= k <= self.n]
        if bad or not self.pass_k:
            raise ValueError(f"pass_k values {list(self.pass_k)} must lie in 1..n (n={self.n}); raise n or drop {bad}")

    def refs(self) -> list[BenchmarkRef]:
        refs = [parse_benchmark(spec) for spec in self.benchmarks]
        if self.benchmark_file:
            refs += [parse_benchmark(f"{name}={path}") for name, path in _read_mapping(self.benchmark_file).items()]
        if self.suite:
            refs += [r for r in suite_refs(self.suite, PAPER_SUITE) if r.name not in {x.name for x in refs}]
        names = [r.name for r in refs]
        if len(set(names)) != len(names):
            raise ValueError(f"benchmark names repeat in {names}; give each benchmark once")
        return refs


def _read_mapping(path: str) -> dict[str, str]:
    try:
        mapping = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"benchmark_file {path}: cannot read a JSON object of name -> path ({error})") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"benchmark_file {path} must hold a JSON object of name -> path strings, e.g. "
                         '{"math500": "/data/math500.jsonl"}')
    return mapping


GENERATE_BACKENDS: dict[str, str] = {
    "hf": "pipeline.eval.generation:HFGenerate",
    "vllm": "pipeline.eval.generation:vllm_generate",
    "torch": "pipeline.eval.generation:torch_generate",
}


def build_generate(config: EvalConfig) -> GenerateFn:
    target = GENERATE_BACKENDS.get(config.backend, config.backend)
    if ":" not in target:
        raise ValueError(f"unknown generation backend {config.backend!r}; valid names: {sorted(GENERATE_BACKENDS)} "
                         "or 'module:callable'")
    if not config.model:
        raise ValueError("no model: set model (CLI: --model HF_DIR)")
    module, attr = target.split(":", 1)
    return getattr(importlib.import_module(module), attr)(config.model, **config.backend_options)


def load_questions(config: EvalConfig) -> dict[str, list[Question]]:
    """Every benchmark, read and checked before any model is built."""
    return {ref.name: load_benchmark(ref, max_questions=config.max_questions) for ref in config.refs()}


def evaluate(config: EvalConfig, generate: GenerateFn | None = None, *, grade: GradeFn | None = None,
             progress: bool = True, write: bool = True) -> dict:
    """Run the evaluation; returns the results dict (also written to ``config.output_dir``)."""
    questions = load_questions(config)
    generate = generate or build_generate(config)
    template = get_template(config.template)
    tokenizer = None
    if template.uses_chat_template:
        from transformers import AutoTokenizer

        check_template(config.template, config.system_prompt, config.model)
        tokenizer = AutoTokenizer.from_pretrained(config.model)
    records = _generate_records(config, questions, generate, template, tokenizer, progress)
    with (reward_grader(config.grader_workers, config.verifier) if grade is None
          else contextlib.nullcontext(grade)) as grade_fn:
        grade_records(records, grade_fn, truncated_scores_zero=config.truncated_scores_zero)
    benchmarks = {name: summarize([r for r in records if r["benchmark"] == name], config.pass_k, config.verifier)
                  for name in questions}
    results = {"model": config.model, "template": config.template, "verifier": config.verifier,
               "config": dataclasses.asdict(config), "benchmarks": benchmarks, "average": average(benchmarks)}
    if write:
        out = Path(config.output_dir)
        write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
        write_atomic(out / "results.md", f"# Evaluation: {config.model or 'model'} ({config.template} template, "
                     f"{config.verifier} verifier)\n\n" + results_markdown(results))
        write_atomic(out / "generations.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return results


def _generate_records(config, questions, generate, template, tokenizer, progress) -> list[dict]:
    from tqdm import tqdm

    records = []
    bar = tqdm(total=sum(map(len, questions.values())), desc="eval", unit="q", disable=not progress,
               dynamic_ncols=True)
    for name, qs in questions.items():
        bar.set_description(f"eval {name}")
        for start in range(0, len(qs), config.chunk_size):
            chunk = qs[start : start + config.chunk_size]
            prompts = [template.format(q.question, tokenizer, config.system_prompt) for q in chunk]
            outputs = generate(prompts, n=config.n, temperature=config.temperature, top_p=config.top_p,
                               max_new_tokens=config.max_new_tokens, stop=template.stop, seed=config.seed + start)
            if len(outputs) != len(chunk) or any(len(o) != config.n for o in outputs):
                raise ValueError(f"the generate function returned {[len(o) for o in outputs]} completions for "
                                 f"{len(chunk)} prompts x n={config.n}")
            for q, completions in zip(chunk, outputs):
                for i, c in enumerate(completions):
                    records.append({"benchmark": name, "question_id": q.question_id, "sample_index": i,
                                    "question": q.question, "gold": q.answer, "response": c.text, "reward": None,
                                    "num_tokens": c.num_tokens, "truncated": c.truncated,
                                    "template": config.template})
            bar.update(len(chunk))
    bar.close()
    return records


def template_study(config: EvalConfig, templates: tuple[str, ...], generate: GenerateFn | None = None, *,
                   grade: GradeFn | None = None, progress: bool = True) -> dict[str, dict]:
    """The paper's template study (section 2): for each template, the share of responses that answer (the verifier
    finds an answer in them) and the accuracy, per benchmark. Results per template go to ``output_dir/<template>/``;
    the table to ``templates.md`` / ``.json``, bar charts to ``templates_answer_rate.png`` / ``templates_accuracy.png``."""
    unknown = [t for t in templates if t not in TEMPLATES]
    if unknown or not templates:
        raise ValueError(f"unknown templates {unknown}; valid names: {sorted(TEMPLATES)}")
    load_questions(config)  # fail on a bad benchmark before building the model
    generate = generate or build_generate(config)
    out = {}
    with (reward_grader(config.grader_workers, config.verifier) if grade is None
          else contextlib.nullcontext(grade)) as grade_fn:
        for name in templates:
            cfg = dataclasses.replace(config, template=name, output_dir=str(Path(config.output_dir) / name))
            out[name] = evaluate(cfg, generate, grade=grade_fn, progress=progress)
    from pipeline.eval.plots import plot_eval_bars

    write_atomic(Path(config.output_dir) / "templates.json", json.dumps(out, indent=2) + "\n")
    write_atomic(Path(config.output_dir) / "templates.md", template_markdown(out))
    for metric in ("answer_rate", "accuracy"):  # bars: one group per benchmark, one bar per template
        plot_eval_bars(out, Path(config.output_dir) / f"templates_{metric}.png", metric=metric)
    return out


def template_markdown(results_by_template: dict[str, dict]) -> str:
    """Template x benchmark table of 'answered % / accuracy %'."""
    names = list(next(iter(results_by_template.values()))["benchmarks"]) + ["average"]
    rows = []
    for template, results in results_by_template.items():
        cells = [results["average"] if n == "average" else results["benchmarks"][n] for n in names]
        rows.append([template] + [f"{100 * c['answer_rate']:.1f} / {100 * c['accuracy']:.1f}" for c in cells])
    return ("# Template study\n\nEach cell: share of responses that give an answer the template's extractor finds "
            "(%) / accuracy (%).\n\n" + markdown_table(["template", *names], rows))


def write_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path

