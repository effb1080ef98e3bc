#!/usr/bin/env bash
# Supervised IP2P, cool-down of the converging recipe (issue 19): from 1.0 M to 1.3 M samples at a constant
# learning rate of 5e-4 the ε-MSE kept falling but the success on 100 validation edits did not (27 -> 28 of
# 100). This continues from BASE (by default the shipped editor, step 4000's EMA weights, saved as a whole
# pipeline with `scripts/save-shapes-editor.sh ip2p work/ip2p-step4000`) with the same batches of 256,
# Min-SNR 5 and EMA, but the learning rate decayed linearly from 5e-4 to 0 over 1000 steps (a fresh AdamW,
# 20 warm-up steps; seed 1, so the records come in a new order). Resumable; THREADS CPU threads (1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/shapes-train-records.sh
base=${BASE:-work/ip2p-step4000}
[ -n "${BASE:-}" ] || [ -f "$base/model_index.json" ] || bash scripts/save-shapes-editor.sh ip2p "$base"
OMP_NUM_THREADS=${THREADS:-1} OMP_WAIT_POLICY=PASSIVE exec $py -m diffusers_uip2p.training.train_uip2p --mode supervised \
  --pretrained_model_name_or_path "$base" --train_data work/shapes-train-100k "${encoded[@]}" \
  --resolution 64 --train_batch_size 32 --gradient_accumulation_steps 8 --max_train_steps 1000 \
  --learning_rate 5e-4 --lr_scheduler linear --lr_warmup_steps 20 --snr_gamma 5 --use_ema --ema_decay 0.995 \
  --checkpointing_steps 25 --checkpoints_total_limit 2 --health_data shapes --health_steps 50 --seed 1 \
  --resume_from_checkpoint latest --output_dir "${OUTPUT:-work/ip2p-cooldown}" "$@"
