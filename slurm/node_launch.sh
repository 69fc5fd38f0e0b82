#!/usr/bin/env bash
# What slurm/pretrain.sh and slurm/rl.sh run on every node of their job, as its one srun task:
#   bash slurm/node_launch.sh SCRIPT LOG_DIR NPROC_PER_NODE torchrun-command...
# Per-node settings from this node's own CPUs, memory and rank count (NPROC_PER_NODE = the ranks' LOCAL_WORLD_SIZE,
# not the job's total), one line saying where it runs, then torchrun. It records torchrun's pid (the batch shell's
# USR1 trap signals its children, the ranks) and makes torchrun ignore USR1 in case a user's --signal=USR1 (no B:)
# sends it to the whole step: by default it would die of it. The ranks install their own handler, which replaces the
# inherited SIG_IGN. Their output lines are prefixed `[rank<global rank> <node>]:`.
#   THREADS_PER_RANK        (node's CPUs / NPROC_PER_NODE)  OMP_NUM_THREADS of each rank
#   VLLM_CPU_KVCACHE_SPACE  (an 8th of a rank's share of the node's memory, >= 1)  stage two's vLLM-CPU KV cache, GiB
set -euo pipefail
script=$1 log_dir=$2 nproc=$3
shift 3
node=$SLURMD_NODENAME
echo $$ >"$log_dir/torchrun.$node.pid"
cpus=$(nproc)
[ -n "${SLURM_CPUS_ON_NODE:-}" ] && [ "$SLURM_CPUS_ON_NODE" -lt "$cpus" ] && cpus=$SLURM_CPUS_ON_NODE
mem_mb=${SLURM_MEM_PER_NODE:-0}
[ "$mem_mb" -gt 0 ] || mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
threads=${THREADS_PER_RANK:-$((cpus / nproc))}
export OMP_NUM_THREADS=$((threads > 0 ? threads : 1))
settings="OMP_NUM_THREADS=$OMP_NUM_THREADS"
if [ "$script" = rl.sh ]; then
  kv=$((mem_mb / nproc / 8 / 1024))
  export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-$((kv > 0 ? kv : 1))}
  settings+=", VLLM_CPU_KVCACHE_SPACE=$VLLM_CPU_KVCACHE_SPACE GiB"
fi
export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE="[rank\${rank} $node]:"
echo "[$script] node $node (hostname $(cat /proc/sys/kernel/hostname), node ${SLURM_NODEID:-0} of ${SLURM_NNODES:-1}):" \
  "$nproc ranks, $cpus CPUs, $mem_mb MiB -> per rank $settings"
trap "" USR1
exec "$@"
