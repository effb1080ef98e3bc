"""Train an InstructPix2Pix-architecture model with UIP2P's Edit Reversibility Constraint (no edited images),
or supervised as InstructPix2Pix (the baseline, on paired data).

    accelerate launch -m diffusers_uip2p.training.train_uip2p \\
        --pretrained_model_name_or_path timbrooks/instruct-pix2pix --train_data records/ \\
        --clip_model_name_or_path openai/clip-vit-large-patch14 --output_dir uip2p-model

The base is an InstructPix2Pix/UIP2P pipeline (8-channel UNet) or a text-to-image one (4 channels), which is
widened with `convert_unet_to_instruct_pix2pix`. The result is a `UIP2PPipeline` folder, or with
``--lora_rank`` LoRA weights that ``pipe.load_lora_weights(output_dir)`` loads. Flags follow diffusers'
``train_instruct_pix2pix.py`` where they overlap. Checkpoints hold the model, optimizer, LR schedule, EMA and
random states; ``--resume_from_checkpoint latest`` continues a run exactly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from diffusers import AutoencoderKL, DDPMScheduler, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm
from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

from ..distributed import cpu_process_group_needed
from ..pipelines import UIP2PPipeline, convert_unet_to_instruct_pix2pix
from ..schedulers import scheduler_from_config
from ..shapes.training_utils import machine
from .batches import BadRecords, RunClock, training_batches
from .data import open_edit_dataset
from .encoded_records import EncodedRecords
from .checkpoint import load_training_state, save_training_state
from .erc import AttentionRecorder, EditModels, ERCConfig, erc_step, supervised_step
from .health import HealthCheck, dataset_health_records, shapes_health_records, still_improving
from .hub import check_hub_push, push_folder
from .losses import CLIPEmbedder, ERCLossWeights


SHAPES_DEFAULTS = ("Run as `diffusers-uip2p train`, the options default to the Shapes world: without "
                   "--pretrained_model_name_or_path the shipped Shapes pipeline, its CLIP and --resolution 64; without "
                   "--train_data 2000 exported Shapes training records; health checks on Shapes validation edits.")


def parse_args(argv=None, prog: str | None = None, shapes_defaults: bool = False) -> argparse.Namespace:
    """``shapes_defaults``: the command line fills the model and data in (`diffusers_uip2p.cli`), so the help
    says so instead of marking them required."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     epilog=SHAPES_DEFAULTS if shapes_defaults else None)
    add = parser.add_argument
    add("--pretrained_model_name_or_path", required=not shapes_defaults,
        help="IP2P/UIP2P or text-to-image pipeline (folder or Hub id)" + (
            "; default: the shipped Shapes pipeline" if shapes_defaults else ""))
    add("--mode", choices=("erc", "supervised"), default="erc", help="erc: UIP2P; supervised: InstructPix2Pix")
    add("--train_data", required=not shapes_defaults,
        help="records: JSONL/folder, a saved or Hub 🤗 dataset, or .tar shards" + (
            "; default: exported Shapes training records" if shapes_defaults else ""))
    add("--column", action="append", default=[], metavar="FIELD=NAME",
        help="dataset column holding a record field, e.g. --column edit_instruction=edit_prompt")
    add("--on_bad_record", choices=("skip", "error"), default="skip", help="what to do with an unusable record")
    add("--max_bad_fraction", type=float, default=0.5,
        help="stop when more than this fraction of the records read are unusable (default 0.5)")
    add("--max_train_samples", type=int)
    add("--encoded_records", help="the records' VAE latents, encoded once by `python -m "
        "diffusers_uip2p.training.encoded_records` (a .safetensors file), instead of encoding them every step")
    add("--clip_model_name_or_path", default="openai/clip-vit-large-patch14", help="CLIP of the ERC losses")
    add("--output_dir", required=True)
    add("--resolution", type=int, default=256)
    add("--random_flip", action="store_true")
    add("--train_batch_size", type=int, default=4)
    add("--gradient_accumulation_steps", type=int, default=1)
    add("--max_train_steps", type=int, default=1000)
    add("--learning_rate", type=float, default=5e-5)
    add("--lr_scheduler", default="constant", help="any diffusers.optimization schedule name")
    add("--lr_warmup_steps", type=int, default=0)
    add("--adam_weight_decay", type=float, default=1e-2)
    add("--max_grad_norm", type=float, default=1.0)
    add("--conditioning_dropout_prob", type=float, default=0.05)
    add("--lambda_clip", type=float, default=1.0, help="weight of L_CLIP (directional)")
    add("--lambda_sim", type=float, default=1.0, help="weight of L_sim")
    add("--lambda_recon", type=float, default=1.0, help="weight of L_recon")
    add("--lambda_recon_clip", type=float, default=1.0, help="weight of L_recon's CLIP term inside L_recon")
    add("--lambda_attn", type=float, default=1.0, help="weight of L_attn (0 also skips attention capture)")
    add("--lambda_denoise", type=float, default=1.0,
        help="weight of the denoising anchor, our addition to ERC (ε-loss on the input image under its caption; "
             "0: the paper's L_ERC)")
    add("--snr_gamma", type=float, default=5.0, help="Min-SNR-γ weighting of the denoising losses; 0: plain ε-MSE")
    add("--conv_in_lr_scale", type=float, default=1.0,
        help="learning-rate multiplier for conv_in, whose image channels start at zero when the UNet is widened")
    add("--min_timestep", type=int, default=0)
    add("--max_timestep", type=int, default=999)
    add("--num_edit_steps", type=int, default=1, help="DDIM steps making each ERC edit (1: one-step x0)")
    add("--attention_resolutions", type=int, nargs="*", help="cross-attention resolutions of L_attn")
    add("--use_ema", action="store_true")
    add("--ema_decay", type=float, default=0.9999)
    add("--lora_rank", type=int, default=0, help="train LoRA adapters of this rank instead of the whole UNet")
    add("--gradient_checkpointing", action="store_true")
    add("--mixed_precision", choices=("no", "fp16", "bf16"), default=None, help="default: accelerate's config")
    add("--checkpointing_steps", type=int, default=500)
    add("--checkpoints_total_limit", type=int)
    add("--resume_from_checkpoint", help="a checkpoint folder, or 'latest' in --output_dir")
    add("--validation_image", help="an image to edit with --validation_prompt every --validation_steps")
    add("--validation_prompt")
    add("--validation_steps", type=int, default=500)
    add("--health_data", help="held-out records for the health checks: 'shapes' (Shapes validation edits, also "
                              "sampled and judged) or records with edited images; none by default")
    add("--health_records", type=int, default=64, help="held-out records of the ε-MSE checks")
    add("--health_edits", type=int, default=16, help="Shapes edits sampled and judged per check ('shapes' only)")
    add("--health_steps", type=int, help="steps between health checks (default: --checkpointing_steps)")
    add("--seed", type=int, default=0)
    add("--dataloader_num_workers", type=int, default=0)
    add("--report_to", default=None, help="accelerate tracker (tensorboard, wandb, ...); off by default")
    add("--push_to_hub", action="store_true")
    add("--hub_model_id")
    add("--hub_token")
    args = parser.parse_args(argv)
    args.health_steps = args.health_steps or args.checkpointing_steps
    for name in ("resolution", "train_batch_size", "gradient_accumulation_steps", "max_train_steps",
                 "checkpointing_steps", "validation_steps", "num_edit_steps", "health_records", "health_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("max_train_samples", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("lambda_clip", "lambda_sim", "lambda_recon", "lambda_recon_clip", "lambda_attn", "lambda_denoise",
                 "snr_gamma", "health_edits", "lr_warmup_steps", "adam_weight_decay", "lora_rank",
                 "dataloader_num_workers"):
        if not 0 <= getattr(args, name) < math.inf:  # NaN fails this too
            parser.error(f"--{name} must be a finite number >= 0, got {getattr(args, name)}")
    for name in ("learning_rate", "max_grad_norm", "conv_in_lr_scale"):
        if not 0 < getattr(args, name) < math.inf:
            parser.error(f"--{name} must be a finite number > 0, got {getattr(args, name)}")
    if not 0 <= args.ema_decay < 1:
        parser.error(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    if not 0 <= args.conditioning_dropout_prob <= 1 / 3:
        parser.error(f"--conditioning_dropout_prob must be in [0, 1/3] (three dropout cases of p each), got "
                     f"{args.conditioning_dropout_prob}")
    if not 0 <= args.max_bad_fraction <= 1:
        parser.error(f"--max_bad_fraction must be in [0, 1], got {args.max_bad_fraction}")
    if not 0 <= args.min_timestep <= args.max_timestep:
        parser.error("need 0 <= --min_timestep <= --max_timestep")
    if bool(args.validation_image) != bool(args.validation_prompt):
        parser.error("--validation_image and --validation_prompt go together")
    try:
        args.columns = dict(item.split("=", 1) for item in args.column)
    except ValueError:
        parser.error(f"--column takes FIELD=NAME, got {args.column}")
    args.command = shlex.join(["accelerate", "launch", "-m", "diffusers_uip2p.training.train_uip2p",
                               *(sys.argv[1:] if argv is None else argv)])
    return args


def load_unet(args) -> tuple[UNet2DConditionModel, bool]:
    """The base UNet as an 8-channel InstructPix2Pix UNet, and whether it had to be widened from 4 channels."""
    unet = UNet2DConditionModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="unet")
    channels, out = unet.config.in_channels, unet.config.out_channels
    if channels == 2 * out:
        return unet, False
    if channels == out:
        if args.lora_rank:
            raise ValueError("--lora_rank needs an InstructPix2Pix/UIP2P base: a text-to-image UNet is widened with "
                             "zero weights for the image channels, and LoRA adapters cannot train those.")
        return convert_unet_to_instruct_pix2pix(unet), True
    raise ValueError(f"The base UNet takes {channels} input channels for {out} output channels; expected {out} "
                     f"(text-to-image, converted here) or {2 * out} (InstructPix2Pix/UIP2P).")


def add_lora(unet: UNet2DConditionModel, rank: int) -> None:
    from peft import LoraConfig

    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))


def checkpoints(output_dir: str) -> list[Path]:
    """The run's complete ``checkpoint-<step>`` folders, oldest first (a save in progress is ``.partial``)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def save_checkpoint(accelerator, args, step: int, *state) -> None:
    """Save under a temporary name, then rename: a run killed while saving leaves no checkpoint that resume
    would trust (``checkpoints`` skips the temporary folder, and the next save replaces it)."""
    final = Path(args.output_dir) / f"checkpoint-{step}"
    partial = final.with_name(final.name + ".partial")
    if accelerator.is_main_process:
        prune_checkpoints(args.output_dir, args.checkpoints_total_limit)
        shutil.rmtree(partial, ignore_errors=True)
    accelerator.wait_for_everyone()
    save_training_state(partial, accelerator, *state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / "recipe.json").write_text(json.dumps(recipe(args)))
        os.replace(partial, final)
    accelerator.wait_for_everyone()


def check_checkpoint(path: Path) -> int:
    """The step of a checkpoint folder, after checking it is one that a run here saved whole."""
    match = re.fullmatch(r"checkpoint-(\d+)", path.name)
    if not path.is_dir():
        raise ValueError(f"--resume_from_checkpoint {path}: no such checkpoint folder.")
    if match is None:
        raise ValueError(f"--resume_from_checkpoint {path}: a checkpoint folder is named checkpoint-<step>, "
                         f"got {path.name!r}.")
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"--resume_from_checkpoint {path}: it holds no model.safetensors (an empty or foreign "
                         f"folder; it has {sorted(p.name for p in path.iterdir())[:6]}).")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            f.keys()
    except Exception as error:  # a truncated or overwritten file: say which, not the library's header error
        raise ValueError(f"--resume_from_checkpoint {path}: model.safetensors is unreadable ({error}); resume from an "
                         "earlier checkpoint.") from error
    return int(match.group(1))


def latest_checkpoint(output_dir: str) -> Path | None:
    found = checkpoints(output_dir)
    return found[-1] if found else None


def prune_checkpoints(output_dir: str, keep: int | None) -> None:
    """Keep the newest ``keep - 1`` checkpoints, making room for the one about to be saved."""
    if keep is None:
        return
    found = checkpoints(output_dir)
    for old in found[: max(0, len(found) - keep + 1)]:
        shutil.rmtree(old)


def edit_pipeline(unet, models: EditModels, base: str) -> UIP2PPipeline:
    scheduler = scheduler_from_config(EulerAncestralDiscreteScheduler,
                                      EulerAncestralDiscreteScheduler.load_config(base, subfolder="scheduler"))
    return UIP2PPipeline(vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer, unet=unet,
                         scheduler=scheduler, safety_checker=None, feature_extractor=None,
                         requires_safety_checker=False)


def validate(pipe: UIP2PPipeline, args, step: int) -> Path:
    """Edit the validation image and save input | edit side by side under output_dir/validation/."""
    from PIL import Image

    source = Image.open(args.validation_image).convert("RGB").resize((args.resolution, args.resolution))
    pipe.set_progress_bar_config(disable=True)
    edited = pipe(args.validation_prompt, image=source, num_inference_steps=20,
                  generator=torch.Generator(pipe.device).manual_seed(args.seed)).images[0]
    grid = Image.new("RGB", (2 * args.resolution, args.resolution))
    grid.paste(source, (0, 0))
    grid.paste(edited.resize(source.size), (args.resolution, 0))
    path = Path(args.output_dir) / "validation" / f"step-{step:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


# What a resumed run must share with the run it continues (its length, paths and reporting may change).
RECIPE = ("pretrained_model_name_or_path", "mode", "resolution", "random_flip", "train_batch_size",
          "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "lr_warmup_steps", "adam_weight_decay",
          "max_grad_norm", "conditioning_dropout_prob", "lambda_clip", "lambda_sim", "lambda_recon",
          "lambda_recon_clip", "lambda_attn", "lambda_denoise", "snr_gamma", "conv_in_lr_scale", "min_timestep",
          "max_timestep", "num_edit_steps", "attention_resolutions", "use_ema", "ema_decay", "lora_rank", "seed")


def recipe(args) -> dict:
    return {name: getattr(args, name) for name in RECIPE}


def check_recipe(args, checkpoint: Path) -> None:
    """A resume must continue the same recipe: another loss weight, anchor or batch is a different run."""
    path = checkpoint / "recipe.json"
    if not path.is_file():
        raise ValueError(f"{checkpoint} has no recipe.json, so it cannot be checked against this run's settings; "
                         "it was written by an older train_uip2p: start a new --output_dir.")
    saved, current = json.loads(path.read_text()), recipe(args)
    differ = {k: (saved.get(k), current[k]) for k in RECIPE if saved.get(k) != current[k]}
    if differ:
        raise ValueError(f"--resume_from_checkpoint {checkpoint}: this run's recipe differs from the checkpoint's in "
                         + ", ".join(f"--{k} ({old!r} there, {new!r} here)" for k, (old, new) in differ.items())
                         + ". Resume with the same settings, or start a new --output_dir.")


def last_loss_means(log_path: Path, window: int = 50) -> dict[str, float]:
    """Mean of each loss term over the log's last ``window`` steps: read from the log, not from memory, so
    that a resumed run's card covers steps from before the resume too."""
    rows = [row for row in map(json.loads, log_path.read_text().splitlines()) if "health" not in row] \
        if log_path.is_file() else []
    rows = rows[-window:]
    names = [k for k in rows[0] if k not in ("step", "lr")] if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in names}


def health_rows(log_path: Path) -> list[dict]:
    return [row for row in map(json.loads, log_path.read_text().splitlines()) if "health" in row] \
        if log_path.is_file() else []


def health_markdown(rows: list[dict]) -> list[str]:
    """The health checks of the run as a table (`training/health.py` says what each column means)."""
    if not rows:
        return ["No health checks ran (`--health_data`)."]
    fields = [f for f in ("edit_eps_low", "edit_eps_high", "edit_eps_ratio", "input_eps_ratio", "success", "preserved")
              if f in rows[0]["health"]]
    bounds = rows[0]["health"]
    lines = [f"Base model's bounds: edit ε-MSE {bounds['bound_edit_eps_low']:.4f} (t < 500), "
             f"{bounds['bound_edit_eps_high']:.4f} (t ≥ 500); input ε-MSE {bounds['bound_input_eps_low']:.4f}, "
             f"{bounds['bound_input_eps_high']:.4f}.", "", "| step | " + " | ".join(fields) + " | improving |",
             "|---:|" + "---:|" * (len(fields) + 1)]
    lines += [f"| {r['step']} | " + " | ".join(f"{r['health'][f]:.4f}" for f in fields) + f" | {r['improving']} |"
              for r in rows]
    if not rows[-1]["improving"]:
        lines += ["", "**The health checks stopped improving** (no better edit ε-MSE or success in the last checks)."]
    return lines


def write_card(args, losses: dict[str, float], seconds: float, validation: list[Path], health: list[dict]) -> None:
    objective = ("ERC (UIP2P): L = λ_clip·L_CLIP + λ_sim·L_sim + λ_recon·L_recon + λ_attn·L_attn "
                 "+ λ_denoise·L_denoise (our denoising anchor), no edited images"
                 if args.mode == "erc" else "supervised InstructPix2Pix: ε-MSE on the true edited images")
    weights = {k: getattr(args, k) for k in ("lambda_clip", "lambda_sim", "lambda_recon", "lambda_recon_clip",
                                             "lambda_attn", "lambda_denoise")} if args.mode == "erc" else {}
    hyper = {k: getattr(args, k) for k in ("resolution", "train_batch_size", "gradient_accumulation_steps",
                                           "max_train_steps", "learning_rate", "lr_scheduler",
                                           "conditioning_dropout_prob", "use_ema", "ema_decay", "lora_rank",
                                           "min_timestep", "max_timestep", "num_edit_steps", "snr_gamma",
                                           "conv_in_lr_scale", "seed")}
    clip = f"`{args.clip_model_name_or_path}`" if args.mode == "erc" else "n/a"
    front_matter = ["---", "library_name: diffusers", f"base_model: {args.pretrained_model_name_or_path}",
                    "pipeline_tag: image-to-image", "tags: [diffusers-uip2p, instruct-pix2pix, image-editing]", "---"]
    lines = [*front_matter, f"# {'UIP2P' if args.mode == 'erc' else 'InstructPix2Pix'} model", "",
             f"- base model: `{args.pretrained_model_name_or_path}`", f"- data: `{args.train_data}`",
             f"- objective: {objective}", f"- loss weights: {weights or 'n/a'}", f"- CLIP of the losses: {clip}",
             f"- hyper-parameters: {hyper}", f"- training time: {seconds / 60:.1f} min on {machine()}", "",
             "## Training", "", f"```\n{args.command}\n```", "", "## Validation", "",
             "Mean of each loss term over the last 50 steps: "
             + ", ".join(f"{k} {v:.4f}" for k, v in losses.items()), "", "## Health checks", "",
             *health_markdown(health), ""]
    lines += [f"![step {p.stem}](validation/{p.name})" for p in validation]
    (Path(args.output_dir) / "README.md").write_text("\n".join(lines) + "\n")


def check_output_dir(output_dir: str) -> None:
    """A folder the run can write into, found before any model loads."""
    folder = Path(output_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"--output_dir {output_dir}: cannot write there ({error.strerror or error}).") from error


def check_resolution(resolution: int, vae, unet_config: dict) -> None:
    """The training images must halve cleanly through the VAE and every UNet level (else a size error deep
    inside the losses)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1) * 2 ** (len(unet_config["down_block_types"]) - 1)
    if resolution % factor:
        raise ValueError(f"--resolution {resolution} is not a multiple of {factor} (the VAE's and the UNet's "
                         f"downsampling together); use {max(factor, resolution // factor * factor)}.")


def main(argv=None, prog: str | None = None, shapes_defaults: bool = False):
    args = parse_args(argv, prog, shapes_defaults)
    token = check_hub_push(args.hub_token) if args.push_to_hub else None
    check_output_dir(args.output_dir)
    accelerator = Accelerator(cpu=cpu_process_group_needed(), gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, log_with=args.report_to,
                              project_config=ProjectConfiguration(project_dir=args.output_dir))
    set_seed(args.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    # Frozen parts: text encoder in the training precision; the VAE and CLIP decode/embed with gradients, in fp32.
    base = args.pretrained_model_name_or_path
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False)
    clip = None
    if args.mode == "erc":
        clip = CLIPEmbedder(CLIPModel.from_pretrained(args.clip_model_name_or_path),
                            CLIPTokenizer.from_pretrained(args.clip_model_name_or_path))
        clip.to(accelerator.device)
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    if args.max_timestep >= noise_scheduler.config.num_train_timesteps:
        raise ValueError(f"--max_timestep must be below the base's {noise_scheduler.config.num_train_timesteps} "
                         f"training timesteps, got {args.max_timestep}.")
    models = EditModels(vae.to(accelerator.device).eval(), text_encoder.to(accelerator.device, weight_dtype).eval(),
                        tokenizer, noise_scheduler, clip)
    config = ERCConfig(ERCLossWeights(args.lambda_clip, args.lambda_sim, args.lambda_recon, args.lambda_recon_clip,
                                      args.lambda_attn, args.lambda_denoise if args.mode == "erc" else 0.0),
                       args.min_timestep, args.max_timestep, args.num_edit_steps,
                       tuple(args.attention_resolutions) if args.attention_resolutions else None,
                       args.conditioning_dropout_prob, args.snr_gamma)

    check_resolution(args.resolution, vae, UNet2DConditionModel.load_config(base, subfolder="unet"))
    dataset = open_edit_dataset(args.train_data, resolution=args.resolution, require_edited=args.mode == "supervised",
                                on_bad_record=args.on_bad_record, columns=args.columns or None,
                                rank=accelerator.process_index, world_size=accelerator.num_processes, seed=args.seed,
                                random_flip=args.random_flip, max_records=args.max_train_samples)
    if args.encoded_records:
        if args.random_flip:
            raise ValueError("--encoded_records holds the unflipped images' latents; drop --random_flip or it.")
        models.encoded = EncodedRecords(args.encoded_records, source=args.train_data, resolution=args.resolution,
                                        vae=vae, keys=("pixel_values", "edited_pixel_values")
                                        if args.mode == "supervised" else ("pixel_values",))

    unet, widened = load_unet(args)
    if args.lora_rank:
        add_lora(unet, args.lora_rank)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    ema = EMAModel(trainable, decay=args.ema_decay) if args.use_ema else None
    conv_in = {id(p) for p in unet.conv_in.parameters() if p.requires_grad}
    groups = [{"params": [p for p in trainable if id(p) not in conv_in], "lr": args.learning_rate},
              {"params": [p for p in trainable if id(p) in conv_in], "lr": args.learning_rate * args.conv_in_lr_scale}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.learning_rate,
                                  weight_decay=args.adam_weight_decay)
    # The prepared schedule steps once per process per optimiser step (as in diffusers' scripts).
    lr_schedule = get_scheduler(args.lr_scheduler, optimizer,
                                num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                num_training_steps=args.max_train_steps * accelerator.num_processes)
    unet, optimizer, lr_schedule = accelerator.prepare(unet, optimizer, lr_schedule)
    if ema is not None:
        ema.to(accelerator.device)
    generator = torch.Generator().manual_seed(args.seed + accelerator.process_index)
    clock = RunClock()
    saved = {"clock": clock} if ema is None else {"clock": clock, "ema": ema}
    state = (unet, optimizer, lr_schedule, saved, generator)  # what a checkpoint holds (training/checkpoint.py)

    step = 0
    if args.resume_from_checkpoint:
        path = (latest_checkpoint(args.output_dir) if args.resume_from_checkpoint == "latest"
                else Path(args.resume_from_checkpoint))
        if path is None:
            accelerator.print(f"No checkpoint in {args.output_dir}: starting a new run.")
        else:
            step = check_checkpoint(path)
            check_recipe(args, path)
            load_training_state(path, accelerator, *state)
            if ema is not None:  # safetensors load onto the CPU
                ema.to(accelerator.device)
            accelerator.print(f"Resumed from {path} at step {step}.")
    log_path = Path(args.output_dir) / "training_log.jsonl"
    if accelerator.is_main_process and log_path.is_file():  # steps after the checkpoint (or a new run's all) are redone
        kept = [line for line in log_path.read_text().splitlines(keepends=True) if json.loads(line)["step"] <= step]
        log_path.write_text("".join(kept))
    if accelerator.is_main_process:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        accelerator.init_trackers("train_uip2p", config={k: v for k, v in vars(args).items()
                                                        if isinstance(v, (int, float, str, bool))})
        accelerator.print(f"{args.mode} training of {sum(p.numel() for p in trainable) / 1e6:.2f} M parameters"
                          + (" (UNet widened from text-to-image)" if widened else ""))

    health = None
    if args.health_data and accelerator.is_main_process:
        health = build_health_check(args, models, dataset_options={"resolution": args.resolution,
                                                                   "columns": args.columns or None})
    history = [row["health"] for row in health_rows(log_path)]
    batches = training_batches(dataset, args.train_batch_size, args.seed, accelerator.process_index,
                               accelerator.num_processes, start_batch=step * args.gradient_accumulation_steps,
                               num_workers=args.dataloader_num_workers, bad=BadRecords(args.max_bad_fraction))
    validation = []
    progress = tqdm(total=args.max_train_steps, initial=step, desc=f"train_uip2p ({args.mode})",
                    disable=not accelerator.is_local_main_process)
    # Installed for the whole run: with gradient checkpointing, backward re-runs the attention layers.
    recorder = None
    if args.mode == "erc" and args.lambda_attn:
        recorder = AttentionRecorder(unet, config.attention_resolutions)
    with recorder or contextlib.nullcontext():
        while step < args.max_train_steps:
            with accelerator.accumulate(unet):
                batch = {k: v.to(accelerator.device) if torch.is_tensor(v) else v for k, v in next(batches).items()}
                if args.mode == "erc":
                    output = erc_step(unet, models, batch, config, generator, recorder)
                    loss, terms = output.loss, output.losses
                else:
                    loss = supervised_step(unet, models, batch, config, generator)
                    terms = {}
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"The loss is {loss.item()} at step {step}; lower --learning_rate or use "
                                             "bf16/fp32 instead of fp16.")
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
                optimizer.step()
                lr_schedule.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue
            if ema is not None:
                ema.step(trainable)
            step += 1
            progress.update()
            logs = {"loss": loss.item(), **terms, "lr": lr_schedule.get_last_lr()[0]}
            progress.set_postfix({k: f"{v:.4f}" for k, v in logs.items() if k != "lr"})
            accelerator.log(logs, step=step)
            if accelerator.is_main_process:
                with log_path.open("a") as log:
                    log.write(json.dumps({"step": step, **logs}) + "\n")
            if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
                save_checkpoint(accelerator, args, step, *state)
            if args.validation_image and accelerator.is_main_process and (
                    step % args.validation_steps == 0 or step == args.max_train_steps):
                with recorder.suspended() if recorder else contextlib.nullcontext():
                    pipe = edit_pipeline(accelerator.unwrap_model(unet), models, base)
                    validation.append(with_ema(ema, trainable, validate, pipe, args, step))
            if health is not None and (step % args.health_steps == 0 or step == args.max_train_steps):
                with recorder.suspended() if recorder else contextlib.nullcontext():
                    pipe = edit_pipeline(accelerator.unwrap_model(unet), models, base)
                    report = with_ema(ema, trainable, health, pipe.unet, pipe)
                history.append(report)
                improving = still_improving(history)
                with log_path.open("a") as log:
                    log.write(json.dumps({"step": step, "health": report, "improving": improving}) + "\n")
                progress.write(f"health at step {step}: " + ", ".join(
                    f"{k} {report[k]:.4f}" for k in ("edit_eps_ratio", "input_eps_ratio", "success", "preserved")
                    if k in report) + ("" if improving else " (stopped improving)"))
    progress.close()

    accelerator.wait_for_everyone()
    check_ranks_agree(accelerator, trainable)
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.copy_to(trainable)
        save(final, models, args)
        write_card(args, last_loss_means(log_path), clock.seconds, validation, health_rows(log_path))
        if args.push_to_hub:
            repo = push_folder(args.output_dir, args.hub_model_id, token, f"train_uip2p {args.mode}")
            accelerator.print(f"Pushed to https://huggingface.co/{repo}")
    # Release the data-parallel wrapper while every process is still alive: freed after a peer has exited,
    # its gloo threads wait for that peer forever.
    accelerator.wait_for_everyone()
    unet = optimizer = lr_schedule = None
    accelerator.free_memory()
    accelerator.end_training()


def build_health_check(args, models: EditModels, dataset_options: dict) -> HealthCheck:
    """The held-out records (the Shapes validation edits, or --health_data records) and the base's bounds."""
    edits = None
    if args.health_data == "shapes":
        records, edits = shapes_health_records(args.health_records)
        edits = edits[: args.health_edits]
    else:
        if not Path(args.health_data).exists():
            raise ValueError(f"--health_data {args.health_data!r} is neither 'shapes' nor an existing records path.")
        try:
            records = dataset_health_records(open_edit_dataset(args.health_data, require_edited=True,
                                                               **dataset_options), args.health_records)
        except ValueError as error:
            raise ValueError(f"--health_data {args.health_data}: {error}") from error
    base_unet = UNet2DConditionModel.from_pretrained(args.pretrained_model_name_or_path, subfolder="unet")
    return HealthCheck(models, records, base_unet.to(models.vae.device).eval(), edits or None, seed=args.seed)


def with_ema(ema, parameters, function, *args):
    """``function(*args)`` with the EMA weights in place (what will be saved), then the trained ones back."""
    if ema is None:
        return function(*args)
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        return function(*args)
    finally:
        ema.restore(parameters)


def check_ranks_agree(accelerator: Accelerator, parameters: list[torch.Tensor]) -> None:
    """Data-parallel ranks must end with the same weights; a mismatch means a broken setup, not a result."""
    checksum = torch.stack([p.detach().double().sum() for p in parameters]).sum().reshape(1)
    every = accelerator.gather(checksum.to(accelerator.device))
    if not torch.allclose(every, every[0]):
        raise RuntimeError(f"The {accelerator.num_processes} processes ended with different weights: {every.tolist()}")
    accelerator.print(f"{accelerator.num_processes} process(es) agree on the weights (checksum {every[0].item():.6f})")


def save(unet, models: EditModels, args) -> None:
    """A `UIP2PPipeline` folder, or LoRA weights (``pytorch_lora_weights.safetensors``) with ``--lora_rank``."""
    if args.lora_rank:
        from peft.utils import get_peft_model_state_dict

        UIP2PPipeline.save_lora_weights(args.output_dir, unet_lora_layers=get_peft_model_state_dict(unet),
                                        safe_serialization=True)
        return
    models.text_encoder.to(torch.float32)  # it ran in the training precision; the weights are the base's
    edit_pipeline(unet, models, args.pretrained_model_name_or_path).save_pretrained(args.output_dir,
                                                                                   safe_serialization=True)


if __name__ == "__main__":
    main()
