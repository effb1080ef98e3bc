#!/usr/bin/env bash
# Supervised InstructPix2Pix on the Shapes world with the converging recipe (issue 19): batches of 256
# (32 × 8 accumulated), Min-SNR-γ 5, 100,000 training records, health checks every 50 steps on Shapes
# validation edits. Resumes exactly from the newest checkpoint in its output folder, so it can run in
# pieces (one CPU thread; extra arguments go to train_uip2p, e.g. --max_train_steps).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/shapes-train-records.sh
output=${OUTPUT:-work/ip2p-supervised-v2}
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE exec $py -m diffusers_uip2p.training.train_uip2p --mode supervised \
  --pretrained_model_name_or_path src/diffusers_uip2p/shapes/models/pipeline --train_data work/shapes-train-100k "${encoded[@]}" \
  --resolution 64 --train_batch_size 32 --gradient_accumulation_steps 8 --max_train_steps 4000 \
  --learning_rate 5e-4 --lr_scheduler constant_with_warmup --lr_warmup_steps 50 --snr_gamma 5 --use_ema --ema_decay 0.995 \
  --checkpointing_steps 25 --checkpoints_total_limit 2 --health_data shapes --health_steps 50 --seed 0 \
  --resume_from_checkpoint latest --output_dir "$output" "$@"
