"""Data preparation commands: tokenize corpora for Megatron, generate the tiny default's data, inspect inputs.

    python -m data_prep tokenize --corpus jsonl --data-files 'outputs/data/pretrain.jsonl' \\
        --tokenizer outputs/data/tokenizer --output-prefix outputs/tokenized/synthetic --workers 2
    python -m data_prep synthetic --out outputs/data --seed 0
    python -m data_prep corpora                                  # the corpus registry
    python -m data_prep questions 'math:/data/MATH?levels=3-5'    # count and show a question set

``tokenize`` writes PREFIX.bin / PREFIX.idx (Megatron indexed dataset) and PREFIX.summary.json, prints the summary,
and does nothing when the output is already up to date (``--force`` rebuilds). Exit status: 0 done, 2 bad input
(the message names the file, line or field and the fix), 130 interrupted (nothing half-written is left).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from cli.errors import add_debug_flag, run_command


def _tokenize(args) -> int:
    from data_prep.tokenize_corpus import TokenizeConfig, tokenize_corpus

    given = {"corpus": args.corpus, "tokenizer": args.tokenizer, "output_prefix": args.output_prefix,
             "data_files": tuple(args.data_files), "workers": args.workers, "on_bad_record": args.on_bad_record,
             "dtype": args.dtype, "file_format": args.format, "text_field": args.text_field, "split": args.split,
             "eod_token": args.eod_token, "batch_size": args.batch_size, "max_documents": args.max_documents}
    config = TokenizeConfig(**{k: v for k, v in given.items() if v is not None}, force=args.force,
                            add_special_tokens=not args.no_special_tokens, progress=not args.no_progress)
    summary = tokenize_corpus(config)
    if summary.get("up_to_date"):
        print(f"{args.output_prefix}.bin/.idx are up to date with these inputs ({summary['documents']} documents, "
              f"{summary['tokens']} tokens); pass --force to rebuild")
        return 0
    skipped = ", ".join(f"{k}: {v}" for k, v in summary["skipped"].items()) or "none"
    print(f"wrote {summary['output']['bin']} and .idx: {summary['documents']} documents, {summary['tokens']} tokens "
          f"(EOD included, {summary['dtype']}), skipped {summary['skipped_total']} ({skipped}), "
          f"{summary['tokens_per_second']:.0f} tokens/s with {summary['workers']} worker(s)")
    for example in summary["skipped_examples"][:5]:
        print(f"  skipped {example['where']}: {example['detail']}")
    print(f"summary: {args.output_prefix}.summary.json")
    return 0


def _synthetic(args) -> int:
    from data_prep.synthetic import SyntheticConfig, make_synthetic_dataset

    overrides = {name: getattr(args, name) for name in SyntheticConfig.__dataclass_fields__
                 if getattr(args, name, None) is not None}
    paths = make_synthetic_dataset(args.out, force=args.force, **overrides)
    manifest = json.loads(paths.manifest.read_text())
    print(f"synthetic data in {paths.root}: {json.dumps(manifest['counts'])}, tokenizer {paths.tokenizer}")
    return 0


def _corpora(args) -> int:
    from data_prep.corpora import CORPORA

    for name, spec in CORPORA.items():
        print(f"{name:20s} {spec.description}  [{spec.describe()}]")
    return 0


def _questions(args) -> int:
    from collections import Counter

    from data_prep.questions import load_questions_spec

    questions = load_questions_spec(args.spec)
    levels = Counter(q.level for q in questions)
    print(f"{len(questions)} questions; per level: {dict(sorted(levels.items(), key=lambda kv: str(kv[0])))}")
    for q in questions[: args.show]:
        print(f"- [{q.source}] level {q.level} answer {q.answer!r}: {q.question[:200]!r}")
    return 0


def _default(field: str):
    from data_prep.tokenize_corpus import TokenizeConfig

    return TokenizeConfig.__dataclass_fields__[field].default


def build_parser() -> argparse.ArgumentParser:
    from data_prep.synthetic import SyntheticConfig

    parser = argparse.ArgumentParser(prog="python -m data_prep", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tok = sub.add_parser("tokenize", help="corpus -> Megatron .bin/.idx (+ .summary.json)")
    tok.add_argument("--corpus", required=True, help="registry name (see `corpora`) or package.module:name")
    tok.add_argument("--data-files", nargs="+", default=[], metavar="GLOB",
                     help="local jsonl/parquet/txt files or globs (quote them); replace the corpus's own source")
    tok.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory")
    tok.add_argument("--output-prefix", required=True, help="writes PREFIX.bin, PREFIX.idx, PREFIX.summary.json")
    tok.add_argument("--workers", type=int, help="encoder processes (default: CPU count; 1 = in this process)")
    tok.add_argument("--on-bad-record", choices=("error", "skip"),
                     help=f"stop at a malformed record or skip and count it (default {_default('on_bad_record')})")
    tok.add_argument("--force", action="store_true", help="rebuild even if up to date")
    tok.add_argument("--dtype", choices=("auto", "uint16", "int32"), help=f"default {_default('dtype')}")
    tok.add_argument("--format", help="jsonl, parquet, txt, txt_lines or hf_disk (default: the corpus's, or by extension)")
    tok.add_argument("--text-field", help="record field holding the text (default: the corpus's)")
    tok.add_argument("--split", help="split of a Hub dataset / save_to_disk DatasetDict (default: the corpus's)")
    tok.add_argument("--eod-token", help="token appended to every document (default: the model's document-end token, "
                     "<|endoftext|> or <|end_of_text|>, else its EOS)")
    tok.add_argument("--no-special-tokens", action="store_true", help="do not let the tokenizer add BOS etc.")
    tok.add_argument("--batch-size", type=int, help=f"documents per worker batch (default {_default('batch_size')})")
    tok.add_argument("--max-documents", type=int, help="stop after this many documents (default: all)")
    tok.add_argument("--no-progress", action="store_true", help="no progress bar")
    tok.set_defaults(run=_tokenize)

    syn = sub.add_parser("synthetic", help="generate the tiny default's corpus, tokenizer and RL question sets")
    syn.add_argument("--out", required=True, help="output directory")
    defaults = SyntheticConfig()
    for name in ("seed", "num_pretrain_docs", "num_train_questions", "num_test_questions", "vocab_size"):
        syn.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=None,
                         help=f"default {getattr(defaults, name)}")
    syn.add_argument("--forum-boxed-rate", dest="forum_boxed_rate", type=float, default=None,
                     help=f"default {defaults.forum_boxed_rate}")
    syn.add_argument("--force", action="store_true", help="regenerate even if complete")
    syn.set_defaults(run=_synthetic)

    sub.add_parser("corpora", help="list the corpus registry").set_defaults(run=_corpora)

    qs = sub.add_parser("questions", help="load an RL question set and show a few questions")
    qs.add_argument("spec", help="[math:|gsm8k:|jsonl:]PATH[?levels=3-5&split=train]")
    qs.add_argument("--show", type=int, default=3)
    qs.set_defaults(run=_questions)
    for command_parser in (parser, *sub.choices.values()):
        add_debug_flag(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def _terminate(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_command(lambda: args.run(args), argv, also_bad_input=(ImportError,))
    except KeyboardInterrupt:
        print("interrupted; no partial output was left", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
