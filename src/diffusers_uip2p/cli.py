"""Command line: ``diffusers-uip2p reconstruct`` inverts an image exactly and reconstructs it;
``diffusers-uip2p convert`` widens a text-to-image folder's UNet into an InstructPix2Pix/UIP2P one.

It writes a side-by-side picture (input | VAE round trip | Dual-Schedule Inversion | DDIM inversion at the
same number of UNet calls) and prints the errors. Without ``--model`` it uses the Shapes-world text-to-image
pipeline that ships with the package, on a bundled Shapes scene with its exact caption.
"""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import PIL.Image
import torch

from .evaluation import ddim_round_trip, ddim_steps_for_same_budget, psnr, relative_error
from .pipelines import AutoEditPipeline


SAMPLE_CAPTION = ("a large black square at the top left, a large yellow circle on the right and a large red triangle "
                  "at the bottom right on a green background")  # assets/sample.png, a Shapes test-split scene


def _load_pipeline(model: str | None) -> AutoEditPipeline:
    if model is None:
        from .shapes.pretrained import load_shapes_pipeline

        return load_shapes_pipeline()
    return AutoEditPipeline.from_pretrained(model, safety_checker=None, feature_extractor=None)


def _side_by_side(images: list[torch.Tensor], scale: int) -> PIL.Image.Image:
    """CHW images in [0, 1] → one PIL image, left to right, enlarged with nearest neighbours."""
    row = torch.cat(images, dim=-1).clamp(0, 1)
    array = (row.permute(1, 2, 0) * 255).round().byte().numpy()
    picture = PIL.Image.fromarray(array)
    return picture.resize((picture.width * scale, picture.height * scale), PIL.Image.NEAREST)


def reconstruct(args: argparse.Namespace) -> dict:
    pipe = _load_pipeline(args.model)
    pipe.set_progress_bar_config(desc="DSI", leave=False)
    image_path = args.image or resources.files("diffusers_uip2p") / "assets" / "sample.png"
    image = PIL.Image.open(image_path).convert("RGB")

    unet_calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda *_: unet_calls.append(1))
    inversion = pipe.invert(image, args.prompt, num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                            output_type="pt")
    dsi = pipe(args.prompt, inversion=inversion, output_type="pt")
    hook.remove()

    model_fn = pipe.guided_model_fn(args.prompt, args.guidance_scale)
    with torch.no_grad():
        ddim_latents, ddim_calls = ddim_round_trip(pipe.scheduler.config, inversion.latents, model_fn,
                                                   ddim_steps_for_same_budget(args.steps))
    ddim_images = pipe.decode_latents_to_images(ddim_latents, "pt")
    dsi_calls = len(unet_calls)

    original = pipe.image_processor.postprocess(pipe.preprocess_images(image), output_type="pt")
    ceiling = inversion.vae_reconstruction
    report = {
        "image": str(image_path), "prompt": args.prompt, "model": args.model or "shipped Shapes pipeline",
        "num_inference_steps": args.steps, "guidance_scale": args.guidance_scale,
        "dsi": {"unet_calls": dsi_calls, "latent_relative_error": relative_error(dsi.latents, inversion.latents),
                "psnr_vs_vae_round_trip_db": psnr(dsi.images, ceiling)},
        "ddim": {"unet_calls": ddim_calls, "latent_relative_error": relative_error(ddim_latents, inversion.latents),
                 "psnr_vs_vae_round_trip_db": psnr(ddim_images, ceiling)},
        "vae_round_trip_psnr_vs_input_db": psnr(ceiling, original),
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    picture = _side_by_side([original[0], ceiling[0], dsi.images[0], ddim_images[0]], args.scale)
    picture.save(output / "reconstruction.png")
    (output / "reconstruction.json").write_text(json.dumps(report, indent=2))
    return report


def convert(args: argparse.Namespace) -> dict:
    """Widen a text-to-image folder's UNet to InstructPix2Pix/UIP2P's 8 input channels (new channels zero)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from .pipelines import UIP2PPipeline, convert_pipeline_folder

    pipeline_class = UIP2PPipeline if args.record_uip2p else StableDiffusionInstructPix2PixPipeline
    pipe = convert_pipeline_folder(args.model, args.output, pipeline_class=pipeline_class,
                                   euler_ancestral=not args.keep_scheduler)
    return {"model": args.model, "output": str(Path(args.output)), "pipeline_class": pipeline_class.__name__,
            "unet_in_channels": pipe.unet.config.in_channels, "scheduler": type(pipe.scheduler).__name__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffusers-uip2p", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rec = commands.add_parser("reconstruct", help="exact inversion and reconstruction of an image")
    rec.add_argument("--image", help="RGB image to invert (default: the bundled sample)")
    rec.add_argument("--prompt", default=SAMPLE_CAPTION, help="the image's caption (default: the sample's)")
    rec.add_argument("--model", help="local diffusers Stable Diffusion folder (default: the shipped Shapes pipeline)")
    rec.add_argument("--steps", type=int, default=50, help="primary steps N (default 50)")
    rec.add_argument("--guidance-scale", type=float, default=7.5)
    rec.add_argument("--output", default="outputs/reconstruct", help="folder for reconstruction.png/.json")
    rec.add_argument("--scale", type=int, default=4, help="enlargement of the saved picture")
    conv = commands.add_parser("convert", help="text-to-image folder -> InstructPix2Pix/UIP2P folder (8-channel UNet)")
    conv.add_argument("--model", required=True, help="local diffusers Stable Diffusion folder (4-channel UNet)")
    conv.add_argument("--output", required=True, help="folder to write (safetensors)")
    conv.add_argument("--keep-scheduler", action="store_true", help="keep the source scheduler (default: Euler ancestral)")
    conv.add_argument("--record-uip2p", action="store_true",
                      help="record UIP2PPipeline in model_index.json (default: the IP2P class, which "
                           "DiffusionPipeline.from_pretrained resolves)")
    args = parser.parse_args(argv)
    if args.command == "convert":
        print(json.dumps(convert(args), indent=2))
        return 0

    report = reconstruct(args)
    print(f"model: {report['model']}; {args.steps} steps, guidance {args.guidance_scale}")
    print(f"{'method':<6} {'UNet calls':>10} {'latent rel. error':>18} {'PSNR vs VAE round trip':>24}")
    for name in ("dsi", "ddim"):
        r = report[name]
        print(f"{name.upper():<6} {r['unet_calls']:>10} {r['latent_relative_error']:>18.3e} "
              f"{r['psnr_vs_vae_round_trip_db']:>21.2f} dB")
    print(f"wrote {Path(args.output) / 'reconstruction.png'} (input | VAE round trip | DSI | DDIM)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
