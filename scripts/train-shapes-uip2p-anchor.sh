#!/usr/bin/env bash
# The denoising-anchor ablation (issue 19): the shipped UIP2P's ERC recipe (scripts/train-shapes-editors.sh:
# 1200 steps of 16 of the same 20,000 records, LR 3e-4, EMA 0.995, seed 0) plus the anchor (λ_denoise = 1,
# Min-SNR-γ 5 on it), with health checks every 200 steps. The shipped model is the run without it
# (compare with benchmarks/editor_health.py). Never sees an edited image: only the health checks read them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/shapes-train-records.sh
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE exec $py -m diffusers_uip2p.training.train_uip2p --mode erc \
  --pretrained_model_name_or_path "$models/pipeline" --clip_model_name_or_path "$models/clip" \
  --train_data work/shapes-train-100k "${encoded[@]}" --max_train_samples 20000 --resolution 64 --train_batch_size 16 \
  --max_train_steps 1200 --learning_rate 3e-4 --lr_warmup_steps 100 --use_ema --ema_decay 0.995 \
  --lambda_denoise 1 --snr_gamma 5 --checkpointing_steps 100 --checkpoints_total_limit 2 --seed 0 \
  --health_data shapes --health_steps 200 --resume_from_checkpoint latest \
  --output_dir "${OUTPUT:-work/uip2p-anchor}" "$@"
