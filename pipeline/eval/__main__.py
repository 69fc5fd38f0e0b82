"""Evaluation, the paper's diagnostics, plots and the run report.

    # accuracy on benchmark sets (greedy, 3000 new tokens: the paper's setting), results.json/.md + generations
    python -m pipeline.eval run --model outputs/rl/hf --template r1 \\
        --benchmark math500=/data/math500.jsonl --benchmark aime24=/data/aime24.parquet --out outputs/eval/after
    python -m pipeline.eval run --model MODEL --suite /data/evaluation_suite          # the authors' suite dir
    python -m pipeline.eval run --model MODEL --benchmark synthetic:outputs/data/rl_test.jsonl \\
        --temperature 1.0 --n 8 --pass-k 1 4 8                                         # pass@k by sampling
    # template study: share of responses that answer, and accuracy, per template
    python -m pipeline.eval templates --model MODEL --benchmark math500=... --templates r1 qwen_math none
    # diagnostics over generations (evaluation's or an RL run's generations.jsonl)
    python -m pipeline.eval reflection --generations outputs/eval/after/generations.jsonl [--keywords extended]
    python -m pipeline.eval rl-diagnostics --run-dir outputs/rl --out outputs/rl/diagnostics
    # plots and the report
    python -m pipeline.eval plot --run-dir runs/grpo --run-dir runs/drgrpo --label GRPO --label "Dr. GRPO" --out plots
    python -m pipeline.eval report --run-dir outputs/pretrain --run-dir outputs/rl \\
        --eval outputs/eval/before/results.json outputs/eval/after/results.json --out report.md

``run`` / ``templates`` flags are the fields of ``pipeline.eval.evaluate.EvalConfig`` (defaults live there).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
from pathlib import Path

from cli.errors import add_debug_flag, run_command

_RENAMED = {"benchmarks": "--benchmark", "output_dir": "--out"}


def _field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field (its help text)."""
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split())
    return docs


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    from pipeline.eval.evaluate import EvalConfig

    docs = _field_docs(EvalConfig)
    for f in dataclasses.fields(EvalConfig):
        flag = _RENAMED.get(f.name, "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{docs.get(f.name, '')} (default: {default!r})")
        if f.name == "benchmarks":
            parser.add_argument(flag, action="append", metavar="NAME=PATH", **kw)
        elif isinstance(default, tuple):
            parser.add_argument(flag, nargs="+", type=int, **kw)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif isinstance(default, dict):
            parser.add_argument(flag, type=json.loads, metavar="JSON", **kw)
        else:
            parser.add_argument(flag, type=type(default), **kw)


def _config(args: argparse.Namespace):
    from pipeline.eval.evaluate import EvalConfig

    names = {f.name for f in dataclasses.fields(EvalConfig)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names}
    return EvalConfig(**values)


def cmd_run(args) -> None:
    from pipeline.eval.evaluate import evaluate
    from pipeline.eval.scoring import results_markdown

    config = _config(args)
    results = evaluate(config)
    print(results_markdown(results))
    print(f"written to {config.output_dir}/results.json, results.md, generations.jsonl")


def cmd_templates(args) -> None:
    from pipeline.eval.evaluate import template_markdown, template_study

    config = _config(args)
    print(template_markdown(template_study(config, tuple(args.templates))))
    print(f"\ntable, plots and per-template results: {config.output_dir}/templates.md, templates_*.png, <template>/")


def cmd_reflection(args) -> None:
    from pipeline.eval import diagnostics, plots
    from pipeline.eval.evaluate import write_atomic

    records = [r for path in args.generations for r in diagnostics.read_generations(path)]
    words = diagnostics.keyword_set(args.keywords)
    result = {"keywords": list(words), "overall": diagnostics.reflection_stats(records, words),
              "by_step": diagnostics.reflection_by_step(records, words),
              "answer_rate_by_template": diagnostics.answer_rate_by_template(records)}
    out = Path(args.out)
    write_atomic(out / "reflection.json", json.dumps(result, indent=2) + "\n")
    plots.plot_reflection_by_step(result["by_step"], out / "reflection_by_step.png")
    print(json.dumps(result["overall"], indent=2))
    print(f"written to {out}/reflection.json")


def cmd_rl_diagnostics(args) -> None:
    from pipeline.eval import diagnostics, plots
    from pipeline.eval.evaluate import write_atomic

    records = diagnostics.read_generations(args.run_dir)
    words = diagnostics.keyword_set(args.keywords)
    out = Path(args.out)
    result = {"length_by_correctness": diagnostics.length_by_correctness(records),
              "reflection_by_step": diagnostics.reflection_by_step(records, words)}
    try:
        result["std_weighting"] = diagnostics.std_weighting(records, group_size=diagnostics.run_group_size(args.run_dir))
    except ValueError as error:  # only part of each group was logged: report the rest
        result["std_weighting"] = None
        print(f"std weighting skipped: {error}", file=sys.stderr)
    write_atomic(out / "rl_diagnostics.json", json.dumps(result, indent=2) + "\n")
    plots.plot_reflection_by_step(result["reflection_by_step"], out / "reflection_by_step.png")
    if result["std_weighting"]:
        plots.plot_std_weighting(result["std_weighting"], out / "std_weighting.png")
    print(f"written to {out}/rl_diagnostics.json and its plots")


def cmd_plot(args) -> None:
    from pipeline.eval import plots
    from pipeline.eval.report import labels_for, load_eval, run_kind
    from pipeline.metrics import read_metrics

    out = Path(args.out)
    paths = [Path(p) for p in args.run_dir]
    runs = {label: read_metrics(p) for label, p in zip(labels_for(paths, args.label, "run"), paths)}
    written = [
        plots.plot_curves({k: v for k, v in runs.items() if run_kind(v) == "rl"}, out / "rl_curves.png",
                          plots.RL_PANELS, smooth=args.smooth),
        plots.plot_curves({k: v for k, v in runs.items() if run_kind(v) == "pretrain"}, out / "pretrain_curves.png",
                          plots.PRETRAIN_PANELS, smooth=args.smooth),
    ]
    if args.eval:
        evals = [Path(p) for p in args.eval]
        results = {label: load_eval(p) for label, p in zip(labels_for(evals, args.eval_label, "eval"), evals)}
        written.append(plots.plot_eval_bars(results, out / "eval_accuracy.png"))
    print("\n".join(str(p) for p in written if p) or "no known metrics to plot")


def cmd_report(args) -> None:
    from pipeline.eval.report import build_report

    path = build_report(args.run_dir, args.out, labels=args.label, evals=args.eval or [],
                        eval_labels=args.eval_label, smooth=args.smooth, keywords=args.keywords)
    print(f"report written to {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="evaluate a model on benchmark sets")
    _add_config_flags(run)
    run.set_defaults(func=cmd_run)
    templates = sub.add_parser("templates", help="template study: answering share and accuracy per template")
    _add_config_flags(templates)
    templates.add_argument("--templates", nargs="+", default=["r1", "qwen_math", "none"])
    templates.set_defaults(func=cmd_templates)
    refl = sub.add_parser("reflection", help="self-reflection share and accuracy with vs without it")
    refl.add_argument("--generations", nargs="+", required=True, help="generations.jsonl files (or their dirs)")
    refl.add_argument("--out", default="outputs/eval/reflection")
    rld = sub.add_parser("rl-diagnostics", help="length of correct vs incorrect, reflection, GRPO std weighting")
    rld.add_argument("--run-dir", required=True, help="RL output dir holding generations.jsonl")
    rld.add_argument("--out", required=True)
    plot = sub.add_parser("plot", help="training curves (runs overlaid) and evaluation bars as PNG")
    report = sub.add_parser("report", help="one markdown report with tables and plots")
    for p in (plot, report):
        p.add_argument("--run-dir", action="append", default=[], help="run output dir (metrics.jsonl); repeat")
        p.add_argument("--label", action="append", help="label per --run-dir, in order")
        p.add_argument("--eval", nargs="+", help="results.json files (or their dirs) to compare")
        p.add_argument("--eval-label", nargs="+", help="label per --eval file, in order")
        p.add_argument("--smooth", type=int, default=1, help="trailing moving-average window for curves")
    plot.add_argument("--out", required=True, help="directory for the PNG files")
    report.add_argument("--out", required=True, help="report path (.md); images go to <stem>_assets/ beside it")
    for p in (refl, rld, report):
        p.add_argument("--keywords", default="authors", help="self-reflection keyword set: authors or extended")
    refl.set_defaults(func=cmd_reflection)
    rld.set_defaults(func=cmd_rl_diagnostics)
    plot.set_defaults(func=cmd_plot)
    report.set_defaults(func=cmd_report)
    for command_parser in (parser, *sub.choices.values()):
        add_debug_flag(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.func(args), argv)


if __name__ == "__main__":
    sys.exit(main())
