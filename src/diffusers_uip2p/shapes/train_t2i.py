"""Train the Shapes world's text-to-image UNet, the base model that DSI inverts and P2P/MasaCtrl/SDEdit edit.

A latent diffusion model exactly as Stable Diffusion trains one, at toy size: the VAE and the CLIP text
tower are frozen (trained by `train_vae` and `train_clip`), the UNet learns to predict the noise (ε) added
at a random timestep of SD's scaled-linear schedule, with Min-SNR-γ loss weighting (Hang et al. 2023,
which diffusers' training examples offer as ``--snr_gamma``; it converges several times faster), and 10 %
of captions are dropped to "" so that classifier-free guidance works. An EMA of the weights is what gets saved. The scenes' latents and caption
embeddings are computed once (the frozen models would give the same ones every epoch).

The result is a complete pipeline folder, loadable as `AutoEditPipeline` and as `StableDiffusionPipeline`.

    python -m diffusers_uip2p.shapes.train_t2i --output src/diffusers_uip2p/shapes/models/pipeline
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from ..pipelines import AutoEditPipeline
from ..schedulers import DualScheduleInversionScheduler
from ..testing import SD15_SCHEDULER_CONFIG
from ..training.losses import min_snr_weights
from .dataset import split_scenes
from .evaluator import judge_caption
from .training_utils import (command_line, cosine_lr, earlier_stage, scenes_to_tensor, set_lr, start_run,
                             write_model_card)


def shapes_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    """SD's UNet layout at toy size: 16×16 latents, cross-attention at 16×16 and 8×8 and in the middle."""
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 96),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=16,
    )


def scheduler_config() -> dict:
    return {k: v for k, v in SD15_SCHEDULER_CONFIG.items() if k not in ("_class_name", "skip_prk_steps")}


@torch.no_grad()
def encode_scenes(scenes, vae, text_encoder, tokenizer, batch_size: int = 256):
    """Scaled VAE latents (posterior mode) and 77-token caption embeddings, as the pipeline makes them."""
    latents, embeddings = [], []
    device = vae.device
    for i in tqdm(range(0, len(scenes), batch_size), desc="encoding scenes"):
        group = scenes[i: i + batch_size]
        latents.append(vae.encode(scenes_to_tensor(group).to(device)).latent_dist.mode() * vae.config.scaling_factor)
        ids = tokenizer([s.caption() for s in group], padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        embeddings.append(text_encoder(ids)[0])
    return torch.cat(latents), torch.cat(embeddings)


@torch.no_grad()
def caption_accuracy(pipe: AutoEditPipeline, scenes, steps: int = 25, guidance_scale: float = 5.0,
                     seed: int = 0, batch_size: int = 25) -> float:
    """Fraction of samples whose every named object the evaluator finds, in place, with its shape and colour."""
    correct = 0
    for i in range(0, len(scenes), batch_size):
        group = scenes[i: i + batch_size]
        generator = torch.Generator(pipe.device).manual_seed(seed + i)
        images = pipe([s.caption() for s in group], num_inference_steps=steps, guidance_scale=guidance_scale,
                      generator=generator).images
        correct += sum(judge_caption(s, image).objects_correct for s, image in zip(group, images, strict=True))
    return correct / len(scenes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="pipeline folder to write")
    parser.add_argument("--vae", required=True, help="folder of the trained AutoencoderKL")
    parser.add_argument("--clip", required=True, help="folder of the trained CLIP (with its tokenizer)")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--snr-gamma", type=float, default=5.0, help="Min-SNR-γ weighting; 0 turns it off")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--drop-caption", type=float, default=0.1, help="probability of training on ''")
    parser.add_argument("--num-scenes", type=int, default=40000, help="training scenes, encoded once")
    parser.add_argument("--init-unet", help="continue from this UNet folder (e.g. a shipped one) instead of scratch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--eval-scenes", type=int, default=50, help="validation captions sampled at the end")
    parser.add_argument("--save-every", type=int, default=0,
                        help="also save the EMA UNet to OUTPUT/checkpoint-unet every N steps, so a cut-off run keeps its"
                             " progress")
    args = parser.parse_args(argv)
    device = start_run(args.threads, args.seed)

    vae = AutoencoderKL.from_pretrained(args.vae).to(device).eval()
    tokenizer = CLIPTokenizer.from_pretrained(args.clip)
    text_encoder = CLIPTextModel.from_pretrained(args.clip).to(device).eval()
    latents, embeddings = encode_scenes(split_scenes("train", args.num_scenes), vae, text_encoder, tokenizer)
    empty = text_encoder(tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                                   return_tensors="pt").input_ids.to(device))[0].detach()

    if args.init_unet:
        unet = UNet2DConditionModel.from_pretrained(args.init_unet).to(device).train()
    else:
        unet = shapes_unet(text_encoder.config.hidden_size).to(device).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    noise_scheduler = DDPMScheduler.from_config(scheduler_config())
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(device)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.01)
    generator = torch.Generator(device).manual_seed(args.seed)

    start = time.time()
    progress = tqdm(range(args.steps), desc="unet")
    for step in progress:
        set_lr(optimizer, cosine_lr(step, args.steps, args.lr))
        index = torch.randint(len(latents), (args.batch_size,), generator=generator, device=device)
        clean, condition = latents[index], embeddings[index]
        dropped = torch.rand(args.batch_size, generator=generator, device=device) < args.drop_caption
        condition = torch.where(dropped[:, None, None], empty, condition)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (args.batch_size,),
                                  generator=generator, device=device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        error = F.mse_loss(unet(noisy, timesteps, encoder_hidden_states=condition).sample, noise, reduction="none")
        loss = (error.mean(dim=(1, 2, 3)) * min_snr_weights(alphas_cumprod[timesteps], args.snr_gamma)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # the EMA warms up so the early random weights do not linger
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(list(ema.parameters()), list(unet.parameters()), 1 - decay)
        if step % 50 == 0:  # reading the loss waits for the GPU; every step would stall its queue
            progress.set_postfix(loss=f"{loss.item():.4f}")
        if args.save_every and (step + 1) % args.save_every == 0:
            ema.save_pretrained(Path(args.output) / "checkpoint-unet")
    seconds = time.time() - start

    scheduler = DualScheduleInversionScheduler.from_config(scheduler_config())
    pipe = AutoEditPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=ema, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    accuracy = caption_accuracy(pipe, split_scenes("validation", args.eval_scenes))
    previous = earlier_stage(args.init_unet and Path(args.init_unet).parent)
    pipe.to("cpu").save_pretrained(args.output)
    figures = {f"validation captions whose samples show every object right ({args.eval_scenes} captions, "
               "25 DSI steps, guidance 5)": f"{accuracy:.3f}",
               "UNet parameters": f"{sum(p.numel() for p in ema.parameters()) / 1e6:.2f} M",
               "final training loss (one batch)": f"{loss.item():.4f}"}
    write_model_card(args.output, "Shapes world text-to-image pipeline",
                     "A toy Stable Diffusion: the Shapes VAE (`vae/`), the Shapes CLIP's text tower "
                     "(`text_encoder/`, frozen), and a UNet (`unet/`, EMA weights) trained with ε-prediction on "
                     "SD's scaled-linear schedule. The scheduler is `DualScheduleInversionScheduler` with SD's "
                     "config, so the folder also loads as a `StableDiffusionPipeline`.", command_line(__spec__.name, argv),
                     args.seed, seconds, figures, notes=previous)
    print(figures)


if __name__ == "__main__":
    main()
