# What slurm/pretrain.sh and slurm/rl.sh do once sbatch has started them (sourced by both, after they set SCRIPT, the
# script's name for its log lines; MODULE, the Python entry point; MODEL_FIELD, the config field MODEL_DIR sets; and
# REPO_DIR). Every knob is documented in their headers.
CONFIG=${CONFIG:-}
OUTPUT_DIR=${OUTPUT_DIR:-$REPO_DIR/runs/$SLURM_JOB_NAME-$SLURM_JOB_ID}
MODEL_DIR=${MODEL_DIR:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
LOG_DIR=${LOG_DIR:-$OUTPUT_DIR/logs/$SLURM_JOB_ID}
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
NPROC_PER_NODE=${NPROC_PER_NODE:-$GPUS_PER_NODE}
MASTER_PORT=${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 10000))}
CONTAINER_IMAGE=${CONTAINER_IMAGE:-}
CONTAINER_MOUNTS=${CONTAINER_MOUNTS:-$REPO_DIR:$REPO_DIR}
VENV=${VENV:-$REPO_DIR/.venv}
if [ -n "$CONTAINER_IMAGE" ] || [ ! -x "$VENV/bin/python" ]; then PYTHON=${PYTHON:-python}; else PYTHON=${PYTHON:-$VENV/bin/python}; fi
SRUN_ARGS=${SRUN_ARGS:-}
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${SHUTDOWN_TIMEOUT:-600}
REQUEUE_ON_USR1=${REQUEUE_ON_USR1:-1}
STEP_WAIT=${STEP_WAIT:-60}
DRY_RUN=${DRY_RUN:-0}

[ "$NPROC_PER_NODE" -gt 0 ] || { echo "no GPUs in the allocation: set NPROC_PER_NODE (ranks per node)" >&2; exit 2; }
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
NNODES=${SLURM_JOB_NUM_NODES:-1}

# --wait: once one node's torchrun has exited, the others get STEP_WAIT s to follow (torchrun's exit barrier makes them
# exit together when all is well), then srun ends the step: a node whose job step died (its processes killed, its
# network gone) would otherwise keep the job until its time limit. --kill-on-bad-exit: one failing node ends the step.
launch=(srun --label --kill-on-bad-exit=1 --wait="$STEP_WAIT" --nodes="$NNODES" --ntasks-per-node=1 --chdir="$REPO_DIR")
# srun stopped inheriting sbatch's --cpus-per-task in SLURM 22.05
[ -n "${SLURM_CPUS_PER_TASK:-}" ] && launch+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
[ -n "$CONTAINER_IMAGE" ] && launch+=(--container-image="$CONTAINER_IMAGE" --container-mounts="$CONTAINER_MOUNTS"
                                      --container-workdir="$REPO_DIR")
read -ra srun_extra <<<"$SRUN_ARGS"
launch+=("${srun_extra[@]}")
# every node runs slurm/node_launch.sh: per-node threads (and KV cache), where it runs, then torchrun
launch+=(bash "$REPO_DIR/slurm/node_launch.sh" "$SCRIPT" "$LOG_DIR" "$NPROC_PER_NODE"
         "$PYTHON" -m torch.distributed.run --nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE"
         --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="$SLURM_JOB_ID"
         --log-dir="$LOG_DIR" --tee=3
         -m "$MODULE")
[ -n "$CONFIG" ] && launch+=(--config "$CONFIG")
launch+=("output_dir=$OUTPUT_DIR")
[ -n "$MODEL_DIR" ] && launch+=("$MODEL_FIELD=$MODEL_DIR")
read -ra extra <<<"$EXTRA_ARGS"
launch+=("${extra[@]}")

echo "[$SCRIPT] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0} on $NNODES node(s) x $NPROC_PER_NODE ranks," \
     "rendezvous $MASTER_ADDR:$MASTER_PORT, output $OUTPUT_DIR, logs $LOG_DIR"
echo "[$SCRIPT] $(printf '%q ' "${launch[@]}")"
[ "$DRY_RUN" = 1 ] && exit 0
mkdir -p "$OUTPUT_DIR" "$LOG_DIR"

got_signal=""
# shellcheck disable=SC2016,SC2317  # invoked by the trap; $1 is expanded on each node
forward_usr1() {
  got_signal=USR1
  echo "[$SCRIPT] USR1: asking the ranks to checkpoint and exit"
  srun --overlap --nodes="$NNODES" --ntasks-per-node=1 \
    bash -c 'pkill -USR1 -P "$(cat "$1/torchrun.$SLURMD_NODENAME.pid")"' forward "$LOG_DIR" \
    || echo "[$SCRIPT] could not forward USR1 to the ranks"
}
trap forward_usr1 USR1
trap 'got_signal=TERM; echo "[$SCRIPT] TERM: waiting for the ranks to checkpoint and exit"' TERM
"${launch[@]}" &
step=$!
while kill -0 "$step" 2>/dev/null; do wait "$step" || true; done # a trap interrupts wait; keep waiting
wait "$step" && rc=0 || rc=$?
echo "[$SCRIPT] srun exited with $rc"
if [ "$rc" != 0 ] && [ -z "$got_signal" ]; then
  latest=$(cat "$OUTPUT_DIR/checkpoints/latest_checkpointed_iteration.txt" 2>/dev/null || true)
  latest=${latest:+iteration $latest in $OUTPUT_DIR/checkpoints (resubmit with OUTPUT_DIR=$OUTPUT_DIR to resume from it)}
  echo "[$SCRIPT] FAILED: a rank or a node of the job failed (srun's and the ranks' errors above name it;" \
       "per-rank logs in $LOG_DIR). Newest complete checkpoint: ${latest:-none}."
fi
if [ "$got_signal" = USR1 ] && [ "$rc" = 0 ] && [ "$REQUEUE_ON_USR1" = 1 ]; then
  echo "[$SCRIPT] requeueing job $SLURM_JOB_ID to continue from the checkpoint"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
