# Sourced by the Shapes editor training scripts (train-shapes-ip2p.sh, train-shapes-uip2p.sh,
# train-shapes-uip2p-anchor.sh) from the repository root: the environment, and the 100,000 exported
# training records they all read.
bash scripts/setup-env.sh
py=.venv/bin/python
models=src/diffusers_uip2p/shapes/models
mkdir -p work logs
[ -f work/shapes-train-100k/records.jsonl ] || $py -m diffusers_uip2p.shapes.dataset --split train \
  --num-records 100000 --output work/shapes-train-100k
# Their VAE latents, encoded once (training/encoded_records.py): about 20 % of a supervised CPU step otherwise.
[ -f work/shapes-train-100k/latents-64.safetensors ] || OMP_NUM_THREADS=1 $py -m diffusers_uip2p.training.encoded_records \
  --pretrained_model_name_or_path "$models/pipeline" --train_data work/shapes-train-100k --resolution 64 \
  --output work/shapes-train-100k/latents-64.safetensors
encoded=(--encoded_records work/shapes-train-100k/latents-64.safetensors)
