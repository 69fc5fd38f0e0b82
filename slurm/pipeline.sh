#!/usr/bin/env bash
# Submit the whole pipeline to SLURM: stage one (slurm/pretrain.sh), then stage two (slurm/rl.sh) from stage
# one's Hugging Face export. Stage two waits with --dependency=afterok and is cancelled if stage one fails
# (--kill-on-invalid-dep=yes). Run it directly, not through sbatch:
#
#   PRETRAIN_CONFIG=configs/pretrain.json RL_CONFIG=configs/rl.json bash slurm/pipeline.sh
#   RUN_DIR=/ckpt/run1 SBATCH_ARGS="--account=me --partition=a100" RL_SBATCH_ARGS="--nodes=2" bash slurm/pipeline.sh
#   eval "$(bash slurm/pipeline.sh)"; squeue -j "$PRETRAIN_JOB_ID,$RL_JOB_ID"
#
# Stdout is `PRETRAIN_JOB_ID=<id>` and `RL_JOB_ID=<id>` (for eval); progress goes to stderr.
# Stage two reads stage one's export from PRETRAIN_OUTPUT_DIR/hf. Knobs shared by both stages (CONTAINER_IMAGE,
# CONTAINER_MOUNTS, NPROC_PER_NODE, VENV, PYTHON, SRUN_ARGS, ...; see slurm/rl.sh) pass through the environment.
#
# Knobs (default):
#   REPO_DIR             this script's repository
#   RUN_DIR              $REPO_DIR/runs/pipeline-<date>-<time>   both stages' outputs and the job logs
#   PRETRAIN_CONFIG      (none)                  stage one's CONFIG (PretrainConfig JSON)
#   PRETRAIN_MODEL_DIR   (config's)              HF Llama to continue from (stage one's MODEL_DIR)
#   PRETRAIN_OUTPUT_DIR  $RUN_DIR/pretrain       stage one's output; its hf/ is stage two's MODEL_DIR
#   PRETRAIN_EXTRA_ARGS  (none)                  stage one's dotted.key=value overrides
#   RL_CONFIG            (none)                  stage two's CONFIG (RLConfig JSON)
#   RL_OUTPUT_DIR        $RUN_DIR/rl             stage two's output
#   RL_EXTRA_ARGS        (none)                  stage two's field=value overrides
#   SBATCH_ARGS          (none)                  sbatch options for both jobs (account, partition, ...)
#   PRETRAIN_SBATCH_ARGS (none)                  sbatch options for stage one only (e.g. --nodes=4 --time=08:00:00)
#   RL_SBATCH_ARGS       (none)                  sbatch options for stage two only
set -euo pipefail

REPO_DIR=${REPO_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
RUN_DIR=${RUN_DIR:-$REPO_DIR/runs/pipeline-$(date +%Y%m%d-%H%M%S)}
PRETRAIN_CONFIG=${PRETRAIN_CONFIG:-}
PRETRAIN_MODEL_DIR=${PRETRAIN_MODEL_DIR:-}
PRETRAIN_OUTPUT_DIR=${PRETRAIN_OUTPUT_DIR:-$RUN_DIR/pretrain}
PRETRAIN_EXTRA_ARGS=${PRETRAIN_EXTRA_ARGS:-}
RL_CONFIG=${RL_CONFIG:-}
RL_OUTPUT_DIR=${RL_OUTPUT_DIR:-$RUN_DIR/rl}
RL_EXTRA_ARGS=${RL_EXTRA_ARGS:-}
read -ra common <<<"${SBATCH_ARGS:-}"
read -ra pretrain_args <<<"${PRETRAIN_SBATCH_ARGS:-}"
read -ra rl_args <<<"${RL_SBATCH_ARGS:-}"

mkdir -p "$RUN_DIR/logs"
# Per-stage knobs are set explicitly so that none leaks from the caller's environment into the wrong stage.
pretrain_job=$(cd "$REPO_DIR" && env -u LOG_DIR REPO_DIR="$REPO_DIR" CONFIG="$PRETRAIN_CONFIG" \
  MODEL_DIR="$PRETRAIN_MODEL_DIR" OUTPUT_DIR="$PRETRAIN_OUTPUT_DIR" EXTRA_ARGS="$PRETRAIN_EXTRA_ARGS" \
  sbatch --parsable --output="$RUN_DIR/logs/%x-%j.log" "${common[@]}" "${pretrain_args[@]}" slurm/pretrain.sh)
pretrain_job=${pretrain_job%%;*} # --parsable prints "id[;cluster]"
echo "[pipeline.sh] stage one: job $pretrain_job (slurm/pretrain.sh) -> $PRETRAIN_OUTPUT_DIR" >&2

if ! rl_job=$(cd "$REPO_DIR" && env -u LOG_DIR REPO_DIR="$REPO_DIR" CONFIG="$RL_CONFIG" \
  MODEL_DIR="$PRETRAIN_OUTPUT_DIR/hf" OUTPUT_DIR="$RL_OUTPUT_DIR" EXTRA_ARGS="$RL_EXTRA_ARGS" \
  sbatch --parsable --dependency="afterok:$pretrain_job" --kill-on-invalid-dep=yes \
  --output="$RUN_DIR/logs/%x-%j.log" "${common[@]}" "${rl_args[@]}" slurm/rl.sh); then
  echo "[pipeline.sh] submitting stage two failed: cancelling stage one (job $pretrain_job)" >&2
  scancel "$pretrain_job"
  exit 1
fi
rl_job=${rl_job%%;*}
echo "[pipeline.sh] stage two: job $rl_job (slurm/rl.sh, after job $pretrain_job succeeds) -> $RL_OUTPUT_DIR" >&2
echo "[pipeline.sh] logs: $RUN_DIR/logs" >&2
echo "PRETRAIN_JOB_ID=$pretrain_job"
echo "RL_JOB_ID=$rl_job"
