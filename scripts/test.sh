#!/usr/bin/env bash
# The project's test command: install (idempotent), start what the tests need, run the suite.
#   bash scripts/test.sh [pytest args]      e.g.  bash scripts/test.sh -k megatron
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -ra "$@"
