#!/usr/bin/env bash
# Download the wheels that scripts/gpu_check.sh installs on the lent single-GPU machine, which has no network.
#
#   bash scripts/gpu_wheels.sh [DIR]        # default DIR: gpu_wheels/ (git-ignored); run on a machine with PyPI
#
# That machine has Python 3.12 with torch 2.11 (CUDA) and transformers 5.17 and what they pull in; it lacks
# megatron-core, the reward's math-verify stack and pytest. The wheels below are exactly what the GPU check's code
# paths import beyond that (tests/test_gpu.py, pipeline.rl with the torch engine, bench/gpu_check.py), for CPython
# 3.12 on manylinux x86_64, without dependencies (each listed by hand). DIR/MANIFEST.txt records file, name,
# version, size and sha256 of each, and what is assumed present; gpu_check.sh verifies it before installing.
# Everything carried with the repository must stay under 64 MiB (this set: ~5 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-gpu_wheels}
MAX_BYTES=$((64 * 1024 * 1024))
PIP=(python3 -m pip)
[ -x .venv/bin/pip ] && PIP=(.venv/bin/pip)

# name==version  (why it is needed on the GPU machine)
WHEELS=(
  "megatron-core==0.17.1"            # the learner and stage one; 0.17+ is the line for Python 3.12 (0.16.1 on 3.11)
  "packaging==26.4"                  # megatron-core asks packaging>=24.2; transformers only guarantees >=20
  "psutil==7.2.2"                    # megatron-core's dist_checkpointing (the RL run checkpoints at its end)
  "math-verify==0.9.0"               # pipeline.rl.grading (the reward)
  "latex2sympy2_extended==1.11.0"    # math-verify's LaTeX parser
  "antlr4-python3-runtime==4.13.2"   # latex2sympy2_extended's parser runtime (math-verify[antlr4_13_2])
  "pytest==9.2.0"                    # tests/test_gpu.py
  "pluggy==1.7.0"                    # pytest
  "iniconfig==2.3.1"                 # pytest
  "pygments==2.21.0"                 # pytest (>= 8.4 requires it)
)
# Assumed present (installed with torch 2.11 and transformers 5.17): torch, numpy, sympy (torch), mpmath, filelock,
# jinja2, networkx, fsspec, typing_extensions, setuptools, safetensors, tokenizers, tqdm, huggingface_hub, pyyaml,
# regex. Not carried because nothing on the checked paths needs them: tensorboard (pipeline.metrics runs without
# it), mbridge / einops (not imported by these paths), datasets / pyarrow (parquet question sets only), vLLM and
# transformer-engine (tests/test_gpu.py skips their tests).
ASSUMED="torch transformers numpy sympy safetensors tokenizers tqdm huggingface_hub yaml jinja2"

TMP="$DIR.tmp"
rm -rf "$TMP"
mkdir -p "$TMP"
specs=()
for w in "${WHEELS[@]}"; do specs+=("${w%%#*}"); done
"${PIP[@]}" download --disable-pip-version-check --quiet --no-cache-dir --dest "$TMP" --no-deps \
  --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  --platform any "${specs[@]}"

{
  echo "# Wheels for scripts/gpu_check.sh, written by scripts/gpu_wheels.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo "# Target: CPython 3.12, manylinux x86_64, installed with --no-deps (each dependency is listed here)."
  echo "# assumed-present: $ASSUMED"
  echo "# file	name	version	bytes	sha256"
  for f in "$TMP"/*.whl; do
    base=$(basename "$f")
    name=$(unzip -p "$f" '*.dist-info/METADATA' | sed -n 's/^Name: //p' | head -1 | tr -d '\r')
    version=$(unzip -p "$f" '*.dist-info/METADATA' | sed -n 's/^Version: //p' | head -1 | tr -d '\r')
    printf '%s\t%s\t%s\t%s\t%s\n' "$base" "$name" "$version" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
  done
} > "$TMP/MANIFEST.txt"

count=$(ls "$TMP"/*.whl | wc -l)
[ "$count" -eq "${#WHEELS[@]}" ] || { echo "gpu_wheels: error: expected ${#WHEELS[@]} wheels, got $count in $TMP" >&2; exit 1; }
total=$(find "$TMP" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
if [ "$total" -gt "$MAX_BYTES" ]; then
  echo "gpu_wheels: error: the wheels total $((total / 1024 / 1024)) MiB, over the 64 MiB that travels with the repository" >&2
  exit 1
fi
rm -rf "$DIR"
mv "$TMP" "$DIR"
awk -F'\t' '!/^#/ {printf "  %-28s %-10s %8.2f MiB\n", $2, $3, $4 / 1048576}' "$DIR/MANIFEST.txt"
echo "[gpu_wheels] $count wheels, $(awk "BEGIN {printf \"%.2f\", $total / 1048576}") MiB in $DIR/ (limit 64 MiB); manifest $DIR/MANIFEST.txt"
