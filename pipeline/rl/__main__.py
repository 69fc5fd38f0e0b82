"""Launch stage two (Dr. GRPO).

    torchrun --nproc_per_node 2 -m pipeline.rl --config rl.json [field=value ...]
    python -m pipeline.rl --config rl.json steps=10          # one process

Fields are those of pipeline.rl.config.RLConfig (a section's as section.field=value, e.g. wandb.project=math-rl),
read by the field's type (cli.config): true/false/1/0 for booleans, JSON for lists and objects.
"""

from __future__ import annotations

import argparse
import sys

from cli.config import apply_overrides, load_file
from cli.errors import add_debug_flag, run_command


def parse_config(argv: list[str]):
    from pipeline.rl.config import RLConfig

    p = argparse.ArgumentParser(prog="python -m pipeline.rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML file of RLConfig fields")
    p.add_argument("overrides", nargs="*", help="field=value or section.field=value")
    add_debug_flag(p)
    args = p.parse_args(argv)
    values = load_file(args.config) if args.config else {}
    return RLConfig.from_dict(apply_overrides(values, args.overrides))


def main(argv: list[str] | None = None) -> int:
    from pipeline.rl.controller import run_rl

    return run_command(lambda: run_rl(parse_config(sys.argv[1:] if argv is None else argv)), argv)


if __name__ == "__main__":
    sys.exit(main())
