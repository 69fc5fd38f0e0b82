"""How every command of the project ends on bad input: one `error:` line naming what to fix, exit code 2.

Bad input is what the user can fix: a setting, a path, a file's content (the errors in `BAD_INPUT`, raised with a
message that names the field or file). Anything else is a bug and keeps its traceback. `--debug`, or R1ZERO_DEBUG=1
in the environment (the recipe's tasks read it: `R1ZERO_DEBUG=1 nemo-run ...`), shows bad input's traceback too.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import os
import sys
from typing import Callable

BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
DEBUG_ENV = "R1ZERO_DEBUG"
BAD_INPUT_EXIT_CODE = 2


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of bad input too (same as {DEBUG_ENV}=1)")


def debug_requested(argv: list[str] | None = None) -> bool:
    return "--debug" in (sys.argv[1:] if argv is None else argv) or os.environ.get(DEBUG_ENV, "") == "1"


def run_command(body: Callable[[], object], argv: list[str] | None = None,
                also_bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """`body()`'s exit code (an int it returns; anything else: 0), or 2 after one `error:` line on stderr if it
    raised bad input."""
    try:
        code = body()
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except (*BAD_INPUT, *also_bad_input) as error:
        if debug_requested(argv):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        return BAD_INPUT_EXIT_CODE


def exit_on_bad_input(task: Callable) -> Callable:
    """A recipe task that exits 2 with one `error:` line on bad input (every rank of a training task prints it)."""
    @functools.wraps(task)
    def run(*args, **kwargs):
        result = None

        def body():
            nonlocal result
            result = task(*args, **kwargs)

        code = run_command(body, argv=[])
        if code:
            sys.exit(code)
        return result

    return run


def did_you_mean(name: str, valid) -> str:
    """' (did you mean 'X'?)' for the valid name closest to a mistyped one, else ''."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
