#!/usr/bin/env bash
# One prepared GPU validation for a single-GPU machine without network (e.g. the lent H200: Python 3.12 with torch
# 2.11 CUDA and transformers 5.17; no megatron-core, vLLM or transformer-engine).
#
#   bash scripts/gpu_wheels.sh        # first, on a machine with PyPI: the missing wheels into gpu_wheels/ (~4 MiB)
#   bash scripts/gpu_check.sh [--wheels DIR] [--out PATH] [--skip-install]
#
# Before anything expensive, each with a one-line error naming the fix: the arguments; the wheel folder (--wheels,
# default gpu_wheels/: exists, every wheel of its MANIFEST.txt present with its sha256, at most 64 MiB in all); CUDA
# (python3 -c 'import torch; torch.cuda.is_available()'). Then it installs the wheels into a venv that also sees the
# machine's own packages (python3 -m venv --system-site-packages; pip install --no-index --no-deps, or unpacking
# where the machine has no pip), the project on its path, and runs, each part under a time limit (all: <= 8 min):
#   (a) python -m pytest -q -m gpu tests/test_gpu.py  (<= 120 s): its torch-engine test is the engine-vs-learner
#       log-prob check on CUDA; the transformer-engine and vLLM tests skip themselves where those are absent;
#   (b) python -m bench.gpu_check (<= 330 s): stage-one throughput and MFU at the Llama-3.2-3B shape in bf16,
#       a Dr. GRPO run with the torch engine on CUDA, the memory plan's prediction vs torch.cuda.max_memory_allocated;
# and writes bench/results/gpu-<date>.json (--out) with every part's status, time and figures, the parts' logs in
# gpu-<date>.logs/ beside it. Exit status 0 when every part passed.
#   --skip-install   install nothing: reuse the venv of an earlier run, or use python3 as it is where it already has
#                    megatron-core, math-verify and pytest (the wheel folder is then not needed)
# Environment: PYTHON (default python3); GPU_CHECK_VENV (default ${TMPDIR:-/tmp}/r1zero-gpu-check-venv);
# GPU_CHECK_SMOKE=1 runs the script on a CPU machine with tiny sizes (no CUDA needed): for testing the script itself.
set -euo pipefail
CALLER_PWD=$PWD
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
USAGE="usage: bash scripts/gpu_check.sh [--wheels DIR] [--out PATH] [--skip-install]"
MAX_BYTES=$((64 * 1024 * 1024))
TOTAL_S=470    # the whole run, setup included (8 minutes less a margin)
PYTEST_S=120
WHEELS=gpu_wheels
OUT=bench/results/gpu-$(date +%F).json
SKIP_INSTALL=0
WHEELS_GIVEN= OUT_GIVEN=
PY=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-${TMPDIR:-/tmp}/r1zero-gpu-check-venv}
SMOKE=${GPU_CHECK_SMOKE:-0}
T0=$SECONDS

err() { echo "gpu_check: error: $1" >&2; exit 1; }
usage_err() { echo "gpu_check: error: $1; $USAGE" >&2; exit 2; }
say() { printf '[gpu_check %3ds] %s\n' $((SECONDS - T0)) "$*"; }

while [ $# -gt 0 ]; do
  case $1 in
    --wheels | --out)
      if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then usage_err "$1 needs a value"; fi
      if [ "$1" = --wheels ]; then WHEELS=$2 WHEELS_GIVEN=1; else OUT=$2 OUT_GIVEN=1; fi
      shift 2 ;;
    --wheels=* | --out=*)
      [ -n "${1#*=}" ] || usage_err "${1%%=*} needs a value"
      if [ "${1%%=*}" = --wheels ]; then WHEELS=${1#*=} WHEELS_GIVEN=1; else OUT=${1#*=} OUT_GIVEN=1; fi
      shift ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) usage_err "unknown argument '$1'" ;;
  esac
done
from_caller() { case $1 in /*) echo "$1" ;; *) echo "$CALLER_PWD/$1" ;; esac; }  # paths given are the caller's
[ -z "$WHEELS_GIVEN" ] || WHEELS=$(from_caller "$WHEELS")
[ -z "$OUT_GIVEN" ] || OUT=$(from_caller "$OUT")
case $PY in /*) ;; */*) PY=$CALLER_PWD/$PY ;; esac

# ---- cheap checks first: the wheel folder, then CUDA ------------------------------------------------------------
WHEEL_FILES=()
ASSUMED=""
check_wheels() {
  local dir=$1 manifest=$1/MANIFEST.txt total file name version size sha actual
  [ -d "$dir" ] || err "wheel folder '$dir' (--wheels) does not exist; run 'bash scripts/gpu_wheels.sh' on a machine with network and carry $dir/ with the repository (or pass --skip-install where megatron-core, math-verify and pytest are installed)"
  [ -f "$manifest" ] || err "'$manifest' is missing from the wheel folder (--wheels); rerun 'bash scripts/gpu_wheels.sh' to rebuild $dir/"
  total=$(find "$dir" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  [ "$total" -le "$MAX_BYTES" ] || err "wheel folder '$dir' (--wheels) holds $(((total + 1048575) / 1048576)) MiB, over the 64 MiB that may travel with the repository; remove what scripts/gpu_wheels.sh did not put there, or drop a wheel from that script"
  while IFS=$'\t' read -r file name version size sha || [ -n "$file" ]; do
    file=${file%$'\r'} sha=${sha%$'\r'}
    case $file in '#'*assumed-present:*) ASSUMED=${file#*assumed-present:}; continue ;; '' | '#'*) continue ;; esac
    [ -n "$sha" ] || err "'$manifest': the line of '$file' lacks fields (file, name, version, bytes, sha256, tab-separated); rerun 'bash scripts/gpu_wheels.sh'"
    [ -f "$dir/$file" ] || err "wheel '$file' listed in '$manifest' is missing from '$dir' (--wheels); rerun 'bash scripts/gpu_wheels.sh' and carry the whole folder"
    actual=$(sha256sum "$dir/$file" | cut -d' ' -f1)
    [ "$actual" = "$sha" ] || err "wheel '$dir/$file' has sha256 $actual but '$manifest' says $sha (corrupt or replaced); rerun 'bash scripts/gpu_wheels.sh'"
    WHEEL_FILES+=("$dir/$file")
  done < "$manifest"
  [ "${#WHEEL_FILES[@]}" -gt 0 ] || err "'$manifest' lists no wheels; rerun 'bash scripts/gpu_wheels.sh'"
  say "wheel folder $dir: ${#WHEEL_FILES[@]} wheels, $(awk -v t="$total" 'BEGIN {printf "%.1f", t / 1048576}') MiB, sha256 verified"
}
[ "$SKIP_INSTALL" = 1 ] || check_wheels "$WHEELS"

command -v "$PY" >/dev/null || err "no Python interpreter '$PY' on PATH; set PYTHON to the one that has torch with CUDA"
if [ "$SMOKE" = 1 ]; then
  say "GPU_CHECK_SMOKE=1: a dry run of this script on the CPU with tiny sizes (CUDA not required)"
else
  rc=0
  info=$("$PY" -c 'import sys, torch
if not torch.cuda.is_available():
    print(torch.__version__); sys.exit(3)
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) on {p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s)")' 2>/dev/null) || rc=$?
  case $rc in
    0) say "$info" ;;
    3) err "CUDA is not available: $PY -c 'import torch; torch.cuda.is_available()' is False (torch $info); run this on the GPU machine (nvidia-smi must list a GPU, torch must be a CUDA build), or set PYTHON to the interpreter that has one" ;;
    *) err "$PY cannot import torch; run this on the GPU machine, whose Python has torch with CUDA (or set PYTHON to that interpreter)" ;;
  esac
fi

# ---- install: a venv over the machine's packages, plus the wheels and the project -------------------------------
if [ "$SKIP_INSTALL" = 1 ]; then
  if [ -x "$VENV/bin/python" ]; then PYV=$VENV/bin/python; else PYV=$(command -v "$PY"); fi
  say "--skip-install: using $PYV as it is"
else
  rm -rf "$VENV"
  "$PY" -m venv --without-pip --system-site-packages "$VENV" \
    || err "'$PY -m venv --without-pip --system-site-packages $VENV' failed; set GPU_CHECK_VENV to a writable folder"
  PYV=$VENV/bin/python
  SITE=$("$PYV" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # python3's own site-packages too: where python3 is itself a venv, --system-site-packages alone would miss torch
  "$PY" -c 'import site; print("import sys, site; [site.addsitedir(p) for p in %r if p not in sys.path]" % (site.getsitepackages(),))' \
    > "$SITE/_gpu_check_base.pth"
  echo "$REPO" > "$SITE/_gpu_check_repo.pth"   # the project, importable from every process (as `pip install -e .`)
  if "$PYV" -m pip --version >/dev/null 2>&1; then
    "$PYV" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --find-links "$WHEELS" \
      "${WHEEL_FILES[@]}" || err "pip could not install the wheels of '$WHEELS' into $VENV (see above)"
    how="pip install --no-index --no-deps"
  else  # no pip on the machine: a wheel is a zip of what goes into site-packages
    "$PYV" - "$SITE" "${WHEEL_FILES[@]}" <<'PYEOF' || err "could not unpack the wheels of '$WHEELS' into $SITE (see above)"
import sys, zipfile
from pathlib import Path
site = Path(sys.argv[1])
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if parts[0].endswith(".data"):  # only the importable parts of a wheel's .data
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            target = site.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(info))
            if (info.external_attr >> 16) & 0o111:
                target.chmod(0o755)
PYEOF
    how="unpacked (no pip on this machine)"
  fi
  say "installed ${#WHEEL_FILES[@]} wheels into $VENV ($how; system site-packages visible; project on its path)"
fi

out_dir=$(dirname "$OUT")
out_base=$(basename "$OUT")
LOGS=$out_dir/${out_base%.*}.logs
mkdir -p "$LOGS" || err "cannot create '$LOGS' beside --out '$OUT'; pass a writable --out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

modules="torch transformers tokenizers safetensors numpy sympy tqdm ${ASSUMED} megatron.core math_verify latex2sympy2_extended pytest pipeline.rl.controller pipeline.pretrain bench.memory_plan"
check=$("$PYV" -c 'import importlib, sys
bad = []
for m in dict.fromkeys(sys.argv[1:]):
    try:
        importlib.import_module(m)
    except Exception as e:
        bad.append(f"{m} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r})")
if bad:
    print("MISSING " + "; ".join(bad))
else:
    import megatron.core, torch, transformers
    print(f"OK torch {torch.__version__}, megatron-core {megatron.core.__version__}, transformers {transformers.__version__}")' \
  $modules 2>"$LOGS/imports.log") || check="MISSING the import check itself failed (see $LOGS/imports.log)"
case $check in
  OK*) say "imports ok: ${check#OK }" ;;
  *) err "not importable with $PYV: ${check#MISSING }; add its wheel to scripts/gpu_wheels.sh (or install it on the machine) and rerun" ;;
esac

# ---- (a) the GPU tests --------------------------------------------------------------------------------------------
say "(a) python -m pytest -q -m gpu tests/test_gpu.py (limit ${PYTEST_S} s)"
t=$SECONDS
set +e
timeout --kill-after=10 "$PYTEST_S" "$PYV" -m pytest -q -rA -m gpu tests/test_gpu.py -p no:cacheprovider \
  --junitxml="$LOGS/pytest-gpu.xml" 2>&1 | tee "$LOGS/pytest-gpu.log"
prc=${PIPESTATUS[0]}
set -e
pytest_s=$((SECONDS - t))
timed_out=()
case $prc in 124 | 137) timed_out=(--pytest-timed-out) ;; esac
say "(a) GPU tests: exit $prc in ${pytest_s} s$([ ${#timed_out[@]} -gt 0 ] && echo ' (timed out)')"

# ---- (b) measurements: throughput, Dr. GRPO run, memory plan vs reality -----------------------------------------
budget=$((TOTAL_S - (SECONDS - T0) - 15))
[ "$budget" -ge 60 ] || budget=60
smoke=()
[ "$SMOKE" = 1 ] && smoke=(--smoke)
say "(b) python -m bench.gpu_check (budget ${budget} s)"
set +e
timeout --kill-after=15 $((budget + 10)) "$PYV" -m bench.gpu_check --out "$OUT" --log-dir "$LOGS" --budget-s "$budget" \
  --pytest-exit "$prc" --pytest-seconds "$pytest_s" --pytest-junit "$LOGS/pytest-gpu.xml" "${timed_out[@]}" "${smoke[@]}"
grc=$?
set -e
[ -f "$OUT" ] || err "bench.gpu_check wrote no $OUT (exit $grc); its logs are in $LOGS"
say "done in $((SECONDS - T0)) s (exit $grc): results $OUT, logs $LOGS"
exit "$grc"
