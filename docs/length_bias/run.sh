#!/usr/bin/env bash
# The paper's length finding at tiny scale (arXiv 2503.20783, Sec. 3): from the same stage-one model, seed and
# budget, GRPO (per-response token mean + per-question std normalisation) vs Dr. GRPO (token sum / constant
# budget, no std). The paper reports that GRPO grows the length of incorrect responses more.
#
#   bash docs/length_bias/run.sh STAGE1_HF_DIR DATA_DIR [OUT_DIR]
#     STAGE1_HF_DIR  stage one's HF export (the tiny pipeline's outputs/tiny_pipeline/stage1/hf)
#     DATA_DIR       the synthetic data (outputs/tiny_pipeline/data: rl_train.jsonl, rl_test.jsonl)
#   SEEDS="7 8 9" STEPS=100 (defaults): one GRPO and one Dr. GRPO run per seed, the pair sharing the seed.
# Writes OUT_DIR/{grpo,drgrpo}-s<seed>/ (default /tmp/length_bias) and, here, rl_curves.png (the first seed's
# pair) + results.md (every run, and the mean over seeds).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?stage-one HF dir}
DATA=${2:?data dir}
OUT=${3:-/tmp/length_bias}
STEPS=${STEPS:-100}
SEEDS=${SEEDS:-7 8 9}
PY=${PYTHON:-.venv/bin/python}
COMMON=(model_dir="$MODEL" train_questions="$DATA/rl_train.jsonl" test_questions="$DATA/rl_test.jsonl"
        eval_max_questions=100 template=none engine=torch questions_per_step=16 group_size=8 max_new_tokens=96
        max_prompt_tokens=64 lr=5e-5 bf16=false micro_batch_size=16 minibatches_per_step=1 steps="$STEPS" eval_every=25
        checkpoint_every=1000 log_generations=-1)
for seed in $SEEDS; do  # a run directory left by an earlier run would be resumed from its checkpoints
  for variant in grpo drgrpo; do
    if [ -e "$OUT/$variant-s$seed" ]; then echo "$OUT/$variant-s$seed exists: pass a new OUT_DIR" >&2; exit 2; fi
  done
done
runs=()
for seed in $SEEDS; do
  for variant in grpo drgrpo; do
    if [ "$variant" = grpo ]; then algo=(algorithm=grpo); else algo=(algorithm=dr_grpo); fi
    "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m pipeline.rl "${COMMON[@]}" "${algo[@]}" \
      seed="$seed" output_dir="$OUT/$variant-s$seed"
    runs+=("$variant-s$seed=$OUT/$variant-s$seed")
  done
done
first=${SEEDS%% *}
"$PY" -m pipeline.eval plot --run-dir "$OUT/grpo-s$first" --run-dir "$OUT/drgrpo-s$first" \
  --label "GRPO (seed $first)" --label "Dr. GRPO (seed $first)" --smooth 5 --out docs/length_bias
{
  echo "Command: \`SEEDS=\"$SEEDS\" STEPS=$STEPS bash docs/length_bias/run.sh STAGE1_HF DATA\` with the tiny default's"
  echo "stage one (\`docs/rl_gain/run.py\` or the README main job); curves of seed $first: rl_curves.png."
  echo
  "$PY" docs/length_bias/summarize.py "${runs[@]}"
} > docs/length_bias/results.md
cat docs/length_bias/results.md
