"""Train the Shapes world's AutoencoderKL: 64×64 RGB ↔ 4×16×16 latents (4× downsampling, like SD's 8×).

The loss is SD's autoencoder loss without the adversarial and perceptual terms, which flat-coloured
scenes do not need: L1 + MSE on pixels plus a small KL to the unit Gaussian that keeps the latents
smooth. At the end the latents are standardised per channel (see `standardise_latents`).

    python -m diffusers_uip2p.shapes.train_vae --output src/diffusers_uip2p/shapes/models/pipeline/vae
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from .dataset import split_scenes
from .training_utils import (command_line, cosine_lr, earlier_stage, scenes_to_tensor, set_lr, start_run,
                             write_model_card)


def shapes_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8,
    )


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR in dB of images in [-1, 1], per image then averaged."""
    mse = ((reconstruction.clamp(-1, 1) - target) / 2).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean().item()


@torch.no_grad()
def standardise_latents(vae: AutoencoderKL, images: torch.Tensor) -> None:
    """Give every latent channel mean 0 and std 1 by folding an affine map into the 1×1 convolutions on
    either side of the latent (``quant_conv`` and ``post_quant_conv``); ``scaling_factor`` becomes 1.

    SD sets one global ``scaling_factor``. Here the channels' spreads differed by up to 6× (1.74, 0.27,
    0.30, 0.88 under one factor), so the diffusion noise drowns the narrow channels long before the wide
    ones and the UNet hardly sees them at moderate noise. Folding keeps the VAE a plain `AutoencoderKL` that
    every diffusers pipeline loads, and the decoded images do not change (the map is inverted exactly before
    decoding)."""
    latents = vae.encode(images).latent_dist.mode() * vae.config.scaling_factor
    mean, std = latents.mean(dim=(0, 2, 3)), latents.std(dim=(0, 2, 3))
    channels = len(mean)
    # encoder side: the first `channels` outputs are the posterior mean, the rest its log-variance
    gain = vae.config.scaling_factor / std
    vae.quant_conv.weight[:channels] *= gain[:, None, None, None]
    vae.quant_conv.bias[:channels] = (vae.quant_conv.bias[:channels] * vae.config.scaling_factor - mean) / std
    vae.quant_conv.bias[channels:] += 2 * torch.log(gain)
    # decoder side: z = z' · std + mean, then the old post_quant_conv on z / scaling_factor
    weight = vae.post_quant_conv.weight[:, :, 0, 0] / vae.config.scaling_factor
    vae.post_quant_conv.bias += weight @ mean
    vae.post_quant_conv.weight *= (std / vae.config.scaling_factor)[None, :, None, None]
    vae.register_to_config(scaling_factor=1.0)


@torch.no_grad()
def evaluate(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 64) -> float:
    vae.eval()
    reconstructions = torch.cat([vae(images[i: i + batch_size], sample_posterior=False).sample
                                 for i in range(0, len(images), batch_size)])
    vae.train()
    return psnr(reconstructions, images)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1e-6)
    parser.add_argument("--num-scenes", type=int, default=20000, help="training scenes, rendered once")
    parser.add_argument("--validation-scenes", type=int, default=256)
    parser.add_argument("--init", help="continue from this AutoencoderKL folder instead of scratch")
    parser.add_argument("--decoder-only", action="store_true",
                        help="with --init: train only the decoder, so latents (and models trained on them) stay valid")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=1000)
    args = parser.parse_args(argv)
    device = start_run(args.threads, args.seed)

    train = scenes_to_tensor(split_scenes("train", args.num_scenes)).to(device)
    validation = scenes_to_tensor(split_scenes("validation", args.validation_scenes)).to(device)
    if args.decoder_only and not args.init:
        parser.error("--decoder-only needs --init: it fine-tunes the decoder of a trained VAE")
    vae = (AutoencoderKL.from_pretrained(args.init) if args.init else shapes_vae()).to(device).train()
    if args.decoder_only:  # as SD's ft-MSE VAE: the latent space is frozen, only the decoding improves
        vae.encoder.requires_grad_(False).eval()
        vae.quant_conv.requires_grad_(False)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.0)
    generator = torch.Generator(device).manual_seed(args.seed)

    start = time.time()
    progress = tqdm(range(args.steps), desc="vae")
    for step in progress:
        set_lr(optimizer, cosine_lr(step, args.steps, args.lr))
        images = train[torch.randint(len(train), (args.batch_size,), generator=generator, device=device)]
        with torch.set_grad_enabled(not args.decoder_only):
            posterior = vae.encode(images).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        reconstruction_loss = F.l1_loss(reconstruction, images) + F.mse_loss(reconstruction, images)
        loss = reconstruction_loss + args.kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            progress.write(f"step {step + 1}: validation PSNR {evaluate(vae, validation):.2f} dB")
    seconds = time.time() - start

    vae.eval()
    if not args.decoder_only:
        standardise_latents(vae, train[:2048])
    previous = earlier_stage(args.init)
    vae.to("cpu").save_pretrained(args.output)
    figures = {f"validation PSNR ({args.validation_scenes} scenes, posterior mode)": f"{evaluate(vae.to(device), validation):.2f} dB",
               "scaling_factor": f"{vae.config.scaling_factor:.4f}",
               "parameters": f"{sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M"}
    write_model_card(args.output, "Shapes world AutoencoderKL",
                     "64×64 RGB images ↔ 4×16×16 latents. Trained on rendered Shapes-world scenes of the `train` "
                     f"split; L1 + MSE + KL (weight {args.kl_weight}). Latents are standardised per channel "
                     "(mean 0, std 1, folded into `quant_conv`/`post_quant_conv`; `scaling_factor` 1), unless the "
                     "run was decoder-only.", command_line(__spec__.name, argv), args.seed,
                     seconds, figures, notes=previous)
    print(figures)


if __name__ == "__main__":
    main()
