#!/usr/bin/env bash
# Trains the shipped Shapes instruction-editing models from the shipped text-to-image pipeline (its UNet is
# widened to 8 input channels, the new ones zero), then the loss ablation, then writes the tables:
#   uip2p/  ERC only (UIP2P): never sees a true edited image;
#   ip2p/   supervised InstructPix2Pix on the true edited images (the baseline);
#   ablation: L_CLIP + L_recon, then + L_sim (the full ERC adds L_attn: that is uip2p/). Not shipped.
# Every run: batches of 16 records at 64 px, seed 0, the same learning rate schedule and EMA; the ERC runs
# take 1200 steps, the supervised one 2400 (an ERC step costs about 3 supervised steps; 2400 is what time allowed, about
# two thirds of the ERC run's CPU time).
# About 1.5 to 2.5 hours on 2 cores (two runs at a time, one thread each; the shipped ERC run took 43 min,
# the supervised one 30, side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
models=src/diffusers_uip2p/shapes/models
py=.venv/bin/python
mkdir -p logs work
[ -f work/shapes-train/records.jsonl ] || $py -m diffusers_uip2p.shapes.dataset --split train --num-records 20000 \
  --output work/shapes-train
common=(--pretrained_model_name_or_path "$models/pipeline" --train_data work/shapes-train
        --clip_model_name_or_path "$models/clip" --resolution 64 --train_batch_size 16 --max_train_steps 1200
        --learning_rate 3e-4 --lr_warmup_steps 100 --use_ema --ema_decay 0.995 --checkpointing_steps 200
        --checkpoints_total_limit 2 --seed 0)
train() { OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $py -m diffusers_uip2p.training.train_uip2p "${common[@]}" "$@"; }
train --mode erc --output_dir work/uip2p-erc &> logs/train_uip2p_erc.log &
erc=$!
train --mode supervised --max_train_steps 2400 --output_dir work/ip2p-supervised &> logs/train_ip2p_supervised.log
train --mode erc --lambda_sim 0 --lambda_attn 0 --output_dir work/ablation-clip-recon &> logs/ablation_a.log &
wait "$erc"
train --mode erc --lambda_attn 0 --output_dir work/ablation-clip-recon-sim &> logs/ablation_b.log
wait
for pair in uip2p:work/uip2p-erc ip2p:work/ip2p-supervised; do
  name=${pair%%:*} run=${pair#*:}
  rm -rf "${models:?}/$name" && mkdir -p "$models/$name"
  cp -r "$run"/{model_index.json,README.md,scheduler,unet} "$models/$name/"
  # The frozen VAE, text encoder and tokenizer are the pipeline's: shared, not copied (shapes/pretrained.py).
  echo '{"vae": "../pipeline", "text_encoder": "../pipeline", "tokenizer": "../pipeline"}' > "$models/$name/shared_components.json"
done
$py benchmarks/shapes_tables.py --threads 1 --ablation "L_CLIP + L_recon=work/ablation-clip-recon" \
  "L_CLIP + L_recon + L_sim=work/ablation-clip-recon-sim"
