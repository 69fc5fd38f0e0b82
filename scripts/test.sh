#!/usr/bin/env bash
# The project's test command: install (idempotent), start what the tests need, run the suite.
#   bash scripts/test.sh [pytest args]      e.g.  bash scripts/test.sh -k megatron
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# the lint gate (rules in pyproject.toml [tool.ruff]); under a second
.venv/bin/ruff check --quiet . || { echo "[test.sh] ruff found the problems above: fix them (ruff check --fix . mends some)" >&2; exit 1; }
# the tests marked slurm / multinode need the local SLURM cluster (partition debug: one node; multi: two nodes, each
# its own network namespace); starting it needs root, and the tests skip without it
if [ "$(id -u)" = 0 ]; then
  bash tests/slurm/start_local_slurm.sh start || echo "[test.sh] the local SLURM cluster did not start: its tests will say why" >&2
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q -ra "$@"
