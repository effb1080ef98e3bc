#!/usr/bin/env bash
# Retrains the shipped Shapes-world models from their seeds, in dependency order, then measures them:
#   1. VAE and CLIP, side by side (one thread each);
#   2. the text-to-image UNet on the VAE's latents and CLIP's text tower, while the VAE's decoder is
#      fine-tuned with its encoder frozen (as SD's ft-MSE VAE: the latents the UNet learns do not move);
#   3. the fine-tuned decoder replaces the first one in the pipeline folder; the benchmark runs.
# About 2.5 hours on a 2-core CPU. THREADS sets the UNet's torch threads.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
models=src/diffusers_uip2p/shapes/models
py=.venv/bin/python
mkdir -p logs work
$py -m diffusers_uip2p.shapes.train_vae --output "$models/pipeline/vae" --threads 1 &> logs/train_vae.log &
$py -m diffusers_uip2p.shapes.train_clip --output "$models/clip" --threads 1 &> logs/train_clip.log &
wait
( $py -m diffusers_uip2p.shapes.train_vae --init "$models/pipeline/vae" --decoder-only --output work/vae-decoder \
    --steps 8000 --lr 3e-4 --threads 1 --eval-every 2000 &> logs/train_vae_decoder.log &&
  $py -m diffusers_uip2p.shapes.train_vae --init work/vae-decoder --decoder-only --output work/vae-decoder2 \
    --steps 2000 --lr 1e-4 --threads 1 --eval-every 1000 &> logs/train_vae_decoder2.log ) &
$py -m diffusers_uip2p.shapes.train_t2i --output "$models/pipeline" --vae "$models/pipeline/vae" \
  --clip "$models/clip" --steps 4000 --threads "${THREADS:-1}" &> logs/train_t2i.log
wait
cp work/vae-decoder2/* "$models/pipeline/vae/"
$py benchmarks/shapes_quality.py --threads "${THREADS:-2}"
