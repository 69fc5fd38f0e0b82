"""Builds and loads the torch engine's fused CPU decode kernels (decode_kernels.cpp).

Compiled once per machine with torch's C++ extension builder (g++ and ninja) into torch's extension cache
($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions); later processes load the cached build, and a changed
source rebuilds it. The build targets the CPU it runs on (-march=native: the softmax and SiLU loops vectorise well
only with the CPU's own instruction set), so its name carries a key of that CPU: the nodes of a cluster sharing
one home directory each load a build for their own instruction set. Without a compiler the engine runs the same
maths in torch ops, about half as fast per decode step, and says so once. `python -m pipeline.rl.decode_kernels`
builds ahead of time (scripts/install.sh does).

torch guards a build with a lock file that a killed build leaves behind, and every later build or load then waits on
it forever (a CI job hung there). Builds here take an `fcntl` lock first, which the kernel releases when its holder
dies; holding it, a torch lock file can only be stale and is removed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

SOURCE = Path(__file__).with_suffix(".cpp")

_loaded = None
_failure: str | None = None


def load(*, verbose: bool = False):
    """The compiled module, or None where it cannot be built (the reason in `failure()`). The torch engine's one
    switch is `engine_options.fused_kernels` (false: the torch-op path the kernels are tested against)."""
    global _loaded, _failure
    if _loaded is not None or _failure is not None:
        return _loaded
    try:
        _put_interpreter_bin_on_path()  # the pip-installed ninja lives beside the interpreter
        started = time.monotonic()
        _loaded = _build_once(verbose)
        if time.monotonic() - started > 5:  # a build, not a cached load
            print(f"[decode kernels] compiled {SOURCE.name} in {time.monotonic() - started:.0f} s (once per machine "
                  "and source version)", file=sys.stderr)
    except Exception as exc:  # no compiler, no ninja, a read-only cache: the torch path still works
        _failure = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        warnings.warn(f"the torch engine's fused decode kernels ({SOURCE.name}) could not be built ({_failure}); "
                      "decoding with torch ops instead. Install g++ and ninja (scripts/install.sh does) to build them.",
                      stacklevel=2)
    return _loaded


def _build_once(verbose: bool):
    from torch.utils.cpp_extension import _get_build_directory, load as build

    name = f"pipeline_decode_kernels_{_cpu_key()}"
    build_dir = Path(_get_build_directory(name, verbose))
    kwargs = dict(name=name, sources=[str(SOURCE)], build_directory=str(build_dir), verbose=verbose,
                  extra_cflags=["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"],
                  extra_ldflags=["-fopenmp"])
    with open(build_dir.parent / f"{name}.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # released by the kernel if this process dies
        (build_dir / "lock").unlink(missing_ok=True)  # torch's own lock: only a dead build can have left it
        return build(**kwargs)


def _put_interpreter_bin_on_path() -> None:
    """Build with the pip-installed ninja beside the interpreter, ahead of any other on PATH: ninja versions hash
    build commands differently, so a build by one (the install step's PATH) is rebuilt by another (a job's PATH)."""
    bin_dir = str(Path(sys.executable).parent)
    ninja = Path(bin_dir, "ninja")
    if ninja.exists() and shutil.which("ninja") != str(ninja):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _cpu_key() -> str:
    """A short hash of this CPU's model and instruction-set flags (what -march=native compiles for)."""
    import hashlib
    import platform

    text = platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text += "".join(sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))}))
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def failure() -> str | None:
    return _failure


def main() -> int:
    module = load(verbose="-v" in sys.argv)
    if module is None:
        print(f"[decode kernels] not built: {_failure}")
        return 1
    print(f"[decode kernels] ready: {module.__file__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
