"""Launch stage two (Dr. GRPO).

    torchrun --nproc_per_node 2 -m pipeline.rl --config rl.json [field=value ...]
    python -m pipeline.rl --config rl.json steps=10          # one process

Fields are those of pipeline.rl.config.RLConfig (a section's as section.field=value, e.g. wandb.project=math-rl);
values parse as JSON when they can (lists, numbers, bools).
"""

from __future__ import annotations

import argparse
import json
import sys

from cli.errors import add_debug_flag, run_command


def parse_config(argv: list[str]):
    from pipeline.rl.config import RLConfig

    p = argparse.ArgumentParser(prog="python -m pipeline.rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON file of RLConfig fields")
    p.add_argument("overrides", nargs="*", help="field=value")
    add_debug_flag(p)
    args = p.parse_args(argv)
    values = _read_config(args.config) if args.config else {}
    for item in args.overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not field=value")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        section, dot, name = key.rpartition(".")
        if dot:  # a field of a section, e.g. wandb.project=math-rl
            if not isinstance(values.setdefault(section, {}), dict):
                raise ValueError(f"override {key!r}: {section!r} is not a config section")
            values[section][name] = value
        else:
            values[key] = value
    return RLConfig.from_dict(values)


def _read_config(path: str) -> dict:
    from pathlib import Path

    if not Path(path).is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        values = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a JSON object of RLConfig fields")
    return values


def main(argv: list[str] | None = None) -> int:
    from pipeline.rl.controller import run_rl

    return run_command(lambda: run_rl(parse_config(sys.argv[1:] if argv is None else argv)), argv)


if __name__ == "__main__":
    sys.exit(main())
