"""Launch stage two (Dr. GRPO).

    torchrun --nproc_per_node 2 -m pipeline.rl --config rl.json [field=value ...]
    python -m pipeline.rl --config rl.json steps=10          # one process

Fields are those of pipeline.rl.config.RLConfig; values parse as JSON when they can (lists, numbers, bools).
"""

from __future__ import annotations

import argparse
import json
import sys


def parse_config(argv: list[str]):
    from pipeline.rl.config import RLConfig

    p = argparse.ArgumentParser(prog="python -m pipeline.rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON file of RLConfig fields")
    p.add_argument("overrides", nargs="*", help="field=value")
    args = p.parse_args(argv)
    values = json.loads(open(args.config).read()) if args.config else {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not field=value")
        key, raw = item.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return RLConfig.from_dict(values)


def main(argv: list[str] | None = None) -> int:
    from pipeline.rl.controller import run_rl

    try:
        cfg = parse_config(sys.argv[1:] if argv is None else argv)
        run_rl(cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
