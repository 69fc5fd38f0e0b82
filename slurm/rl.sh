#!/usr/bin/env bash
# Stage two (Dr. GRPO) on SLURM: one srun task per node runs torchrun, the torchruns rendezvous (c10d) on the
# first node of the allocation and start NPROC_PER_NODE ranks of `python -m pipeline.rl` each.
#
#   sbatch slurm/rl.sh                                                    # from the repository root
#   CONFIG=configs/rl.json MODEL_DIR=/ckpt/stage1/hf OUTPUT_DIR=/ckpt/rl sbatch --nodes=2 slurm/rl.sh
#   CONTAINER_IMAGE=/images/r1zero.sqsh CONTAINER_MOUNTS=/data:/data,/ckpt:/ckpt sbatch slurm/rl.sh
#   EXTRA_ARGS="steps=100 lr=2e-6" sbatch --time=02:00:00 slurm/rl.sh   # RLConfig field=value overrides
#
# Every knob below is an environment variable (sbatch passes the submitting shell's environment to the job);
# the #SBATCH lines are A100-node defaults that sbatch command-line options override.
#
# Several nodes (`sbatch --nodes=N`): every node's torchrun starts NPROC_PER_NODE ranks (the ranks' LOCAL_WORLD_SIZE)
# and they rendezvous on the first node of the allocation (its hostname, from `scontrol show hostnames`, must resolve
# on every node). A node's ranks get consecutive global ranks, so tensor parallelism (parallel.tp / tp, a divisor of
# NPROC_PER_NODE) stays inside a node and data parallelism goes across nodes. Threads and memory per rank are worked
# out on each node from its own CPUs and memory over its own rank count; the job log has one line per node saying
# where it runs, and each rank's output lines start with `[rank<global rank> <node>]:`.
#
# Time limits: SLURM sends USR1 to this batch shell 300 s before the time limit (--signal=B:USR1@300).
# The shell forwards it to the ranks only (torchrun's children on every node, through `srun --overlap pkill`),
# not to torchrun, which would die of it, nor to the ranks' helper processes. The ranks finish the current
# RL step, save a checkpoint and exit 0; then the shell requeues the job (REQUEUE_ON_USR1=1) and the next run
# resumes from that checkpoint. Preemption / `scontrol requeue`: SLURM itself sends TERM to every process of the
# job; the ranks checkpoint within KillWait (their helper processes ignore TERM and USR1), and the requeued job
# resumes from the newest complete checkpoint.
# Resuming needs a stable OUTPUT_DIR: the default contains the job id, which a requeue keeps.
#
# Knobs (default):
#   REPO_DIR         $SLURM_SUBMIT_DIR     repository root (submit from it, or set this)
#   CONFIG           (none)                JSON file of RLConfig fields (pipeline/rl/config.py); none: defaults
#   OUTPUT_DIR       $REPO_DIR/runs/$SLURM_JOB_NAME-$SLURM_JOB_ID     -> output_dir=
#   MODEL_DIR        (config's)            starting policy, an HF directory (stage one's OUT/hf) -> model_dir=
#   EXTRA_ARGS       (none)                more field=value overrides, whitespace-separated (no spaces inside)
#   LOG_DIR          $OUTPUT_DIR/logs/$SLURM_JOB_ID   per-rank logs of this job (torchrun --log-dir)
#   GPUS_PER_NODE    $SLURM_GPUS_ON_NODE, else 8  GPUs per node (allocate with sbatch --gpus-per-node=N)
#   NPROC_PER_NODE   $GPUS_PER_NODE         ranks per node (set it on CPU nodes: sbatch --gpus-per-node=0)
#   MASTER_PORT      29500 + job id % 10000  c10d rendezvous port on the first node
#   CONTAINER_IMAGE  (none)                run in this pyxis/enroot image (srun --container-image)
#   CONTAINER_MOUNTS $REPO_DIR:$REPO_DIR    srun --container-mounts (add data and checkpoint dirs)
#   VENV             $REPO_DIR/.venv       virtualenv whose python runs the job (without a container)
#   PYTHON           $VENV/bin/python, or `python` in a container (or when there is no $VENV)
#   SRUN_ARGS        (none)                extra srun options, whitespace-separated
#   THREADS_PER_RANK (node's CPUs / NPROC_PER_NODE)  CPU threads per rank (OMP_NUM_THREADS), worked out on each node
#   VLLM_CPU_KVCACHE_SPACE (an 8th of a rank's share of the node's memory, >= 1)  GiB of vLLM KV cache per rank on
#                                          CPU-only nodes (GPU nodes use engine_options.gpu_memory_utilization)
#   SHUTDOWN_TIMEOUT 600                   seconds torchrun waits for ranks to exit after TERM
#   REQUEUE_ON_USR1  1                     requeue after a USR1-triggered clean exit (0: just exit)
#   STEP_WAIT        60                    seconds the other nodes get once one node's torchrun exited (srun --wait)
#   DRY_RUN          0                     1: print the srun command and exit
#
#SBATCH --job-name=rl
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --mem=0
#SBATCH --exclusive
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.log
set -euo pipefail

: "${SLURM_JOB_ID:?run this through sbatch (sbatch slurm/rl.sh)}"
REPO_DIR=${REPO_DIR:-$SLURM_SUBMIT_DIR}
[ -f "$REPO_DIR/slurm/training_job.sh" ] || { echo "REPO_DIR=$REPO_DIR is not the repository root: submit from it or set REPO_DIR" >&2; exit 2; }
SCRIPT=rl.sh MODULE=pipeline.rl MODEL_FIELD=model_dir
# shellcheck source=training_job.sh
source "$REPO_DIR/slurm/training_job.sh"
