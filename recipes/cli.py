"""The `nemo-run` command: run a NeMo-Run recipe file as its own CLI, from any directory.

    nemo-run recipes/llama3b_math_then_drgrpo.py [overrides ...] [--yes] [--dryrun]

NeMo-Run installs only `nemo` / `nemorun`; a recipe file is a script whose `__main__` calls `run.cli.main`.
This runs it as `__main__` with the venv's bin directory on PATH (LocalExecutor spawns `torchrun`).
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    recipe = Path(sys.argv[1])
    if not recipe.is_file():
        print(f"nemo-run: no recipe file {recipe} (expected a Python file such as "
              "recipes/llama3b_math_then_drgrpo.py)", file=sys.stderr)
        sys.exit(2)
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    sys.argv = [str(recipe), *sys.argv[2:]]
    sys.path.insert(0, str(recipe.resolve().parent))
    runpy.run_path(str(recipe), run_name="__main__")


if __name__ == "__main__":
    main()
