#!/usr/bin/env bash
# Trains the Shapes instruction-editing models of the UIP2P table from the shipped text-to-image pipeline (its
# UNet widened to 8 input channels, the new ones zero), then measures the table:
#   uip2p/  ERC only (UIP2P, shipped): never sees a true edited image; 1200 steps of 16 of 20,000 records;
#   ip2p/   supervised InstructPix2Pix on the true edited images (shipped): scripts/train-shapes-ip2p.sh,
#           4000 steps of 256 (9.7 h on one core), run on its own; this script ships neither.
#   ablation (not shipped), each the uip2p recipe through scripts/train-shapes-uip2p-anchor.sh (the same
#   records, LR, EMA and seed, with health checks): L_CLIP + L_recon; + L_sim; and the full ERC + the
#   denoising anchor (λ_denoise 100, our addition).
# About 40 min per run on one core, two runs at a time (one thread each); the table then takes about
# 20 min per model on one core.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
models=src/diffusers_uip2p/shapes/models
py=.venv/bin/python
mkdir -p logs work
[ -f work/shapes-train/records.jsonl ] || $py -m diffusers_uip2p.shapes.dataset --split train --num-records 20000 \
  --output work/shapes-train
OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $py -m diffusers_uip2p.training.train_uip2p --mode erc \
  --pretrained_model_name_or_path "$models/pipeline" --train_data work/shapes-train \
  --clip_model_name_or_path "$models/clip" --resolution 64 --train_batch_size 16 --max_train_steps 1200 \
  --learning_rate 3e-4 --lr_warmup_steps 100 --use_ema --ema_decay 0.995 --checkpointing_steps 200 \
  --checkpoints_total_limit 2 --seed 0 --output_dir work/uip2p-erc &> logs/train_uip2p_erc.log &
erc=$!
anchor() { OUTPUT=$1 bash scripts/train-shapes-uip2p-anchor.sh "${@:2}"; }
anchor work/ablation-clip-recon --lambda_denoise 0 --lambda_sim 0 --lambda_attn 0 &> logs/ablation_a.log
wait "$erc"
anchor work/ablation-clip-recon-sim --lambda_denoise 0 --lambda_attn 0 &> logs/ablation_b.log &
anchor work/uip2p-anchor100 --lambda_denoise 100 &> logs/ablation_anchor.log
wait
$py scripts/ship_shapes_editor.py work/uip2p-erc uip2p
$py benchmarks/shapes_tables.py --threads 1 --sections uip2p --ablation \
  "L_CLIP + L_recon=work/ablation-clip-recon" "L_CLIP + L_recon + L_sim=work/ablation-clip-recon-sim" \
  "UIP2P + denoising anchor (λ_denoise 100)=work/uip2p-anchor100"
