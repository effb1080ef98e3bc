#!/usr/bin/env bash
# Retrains the shipped Shapes-world models from their seeds, in dependency order, then measures them:
#   1. VAE and CLIP, side by side (one thread each); the VAE ends by standardising its latents per channel;
#   2. the text-to-image UNet on the VAE's latents and CLIP's text tower (seven stages: 4000 steps, then
#      5000 more with Min-SNR weighting, then 6500 more at a lower learning rate, then 9000 more on twice the
#      scenes; then three stages at batch 256, 512 and 1024 on 200,000 scenes, which ran on a GPU in 17
#      minutes and would take about 40 hours here), while the VAE's decoder is fine-tuned with its encoder frozen (as
#      SD's ft-MSE VAE: the latents the UNet learns do not move);
#   3. the fine-tuned decoder replaces the first one; the task classifier trains on the text tower;
#      the benchmark runs.
# History differs in one detail: the shipped VAE was standardised after the UNet's first stage (the fold
# does not change decoded images, so the second stage adapted the UNet to it). About 9 hours on 2 cores
# without stages 5-7; with a GPU (train_t2i uses one when torch sees it) those take minutes.
# The instruction-editing models (UIP2P, InstructPix2Pix) train from this pipeline: scripts/train-shapes-editors.sh.
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
$py -m diffusers_uip2p.shapes.train_t2i --output work/t2i-stage1 --vae "$models/pipeline/vae" \
  --clip "$models/clip" --steps 4000 --snr-gamma 0 --threads 1 &> logs/train_t2i.log
wait
cp work/vae-decoder2/* "$models/pipeline/vae/"
OMP_WAIT_POLICY=PASSIVE $py -m diffusers_uip2p.shapes.train_t2i --output "$models/pipeline" --vae "$models/pipeline/vae" \
  --clip "$models/clip" --init-unet work/t2i-stage1/unet --steps 5000 --lr 8e-4 --num-scenes 30000 \
  --threads "${THREADS:-2}" &> logs/train_t2i_stage2.log
OMP_WAIT_POLICY=PASSIVE $py -m diffusers_uip2p.shapes.train_t2i --output work/t2i-stage3 --vae "$models/pipeline/vae" \
  --clip "$models/clip" --init-unet "$models/pipeline/unet" --steps 6500 --lr 5e-4 --num-scenes 30000 \
  --threads 1 --save-every 250 &> logs/train_t2i_stage3.log
OMP_WAIT_POLICY=PASSIVE $py -m diffusers_uip2p.shapes.train_t2i --output work/t2i-stage4 --vae "$models/pipeline/vae" \
  --clip "$models/clip" --init-unet work/t2i-stage3/unet --steps 9000 --lr 3e-4 --num-scenes 60000 \
  --threads "${THREADS:-2}" --save-every 250 &> logs/train_t2i_stage4.log
for stage in "5 256 5250 5e-4" "6 512 5000 5e-4" "7 1024 2750 3e-4"; do
  read -r n batch steps lr <<< "$stage"
  $py -m diffusers_uip2p.shapes.train_t2i --output "work/t2i-stage$n" --vae "$models/pipeline/vae" \
    --clip "$models/clip" --init-unet "work/t2i-stage$((n - 1))/unet" --steps "$steps" --batch-size "$batch" \
    --lr "$lr" --num-scenes 200000 --save-every 1000 &> "logs/train_t2i_stage$n.log"
done
cp work/t2i-stage7/unet/diffusion_pytorch_model.safetensors "$models/pipeline/unet/"
$py -m diffusers_uip2p.training.train_task_classifier --pretrained_model_name_or_path "$models/pipeline" \
  --add_to_pipeline --shapes --hidden_dim 128 --num_layers 2 --num_heads 4 \
  --num_epochs 5 --learning_rate 1e-3 &> logs/train_task_classifier.log
$py benchmarks/shapes_quality.py --threads "${THREADS:-2}"
