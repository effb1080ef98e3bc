#!/usr/bin/env bash
# UIP2P (ERC + the denoising anchor) on the Shapes world with the supervised run's recipe
# (scripts/train-shapes-ip2p.sh): batches of 256 (32 × 8 accumulated), LR 5e-4 constant after 50 warm-up
# steps, Min-SNR-γ 5 on the anchor, EMA 0.995, the same 100,000 training records and seed, health checks every
# 50 steps. So the two learning curves compare at equal samples, which is the paper's claim (issue 19).
# It starts from the text-to-image pipeline, never from a supervised editor, and never sees an edited image:
# only the health checks read them. Resumes exactly from the newest checkpoint in its output folder
# (one CPU thread; extra arguments go to train_uip2p, e.g. --max_train_steps).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/shapes-train-records.sh
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE exec $py -m diffusers_uip2p.training.train_uip2p --mode erc \
  --pretrained_model_name_or_path "$models/pipeline" --clip_model_name_or_path "$models/clip" \
  --train_data work/shapes-train-100k "${encoded[@]}" --resolution 64 --train_batch_size 32 --gradient_accumulation_steps 8 \
  --max_train_steps 4000 --learning_rate 5e-4 --lr_scheduler constant_with_warmup --lr_warmup_steps 50 \
  --lambda_denoise "${LAMBDA_DENOISE:-100}" --snr_gamma 5 --use_ema --ema_decay 0.995 \
  --checkpointing_steps 5 --checkpoints_total_limit 2 --health_data shapes --health_steps 50 --seed 0 \
  --resume_from_checkpoint latest --output_dir "${OUTPUT:-work/uip2p-scaled}" "$@"
