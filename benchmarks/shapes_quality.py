"""Quality of the shipped Shapes-world models, on the *test* split (scenes no training run drew).

Measures the bars of the Shapes issue and writes a JSON record and a picture:

* VAE round trip: PSNR of decode(encode(x)) (posterior mode) against x, per scene, averaged.
* CLIP retrieval: caption → image top-1 among groups of 100 test scenes.
* Text-to-image: samples from test captions with `AutoEditPipeline` (DSI sampler from noise), judged by
  the Shapes evaluator: every named object in its cell with the right shape and colour (``objects
  correct``), and the whole scene read back exactly (``exact``). Also reports how many of those test
  captions also occur among the T2I training scenes (single-object scenes can repeat by chance).
* Reconstruction: DSI at N steps against diffusers' DDIM inversion at the same number of UNet calls
  (2N − 2 steps), both from the same clean latents, prompt and guidance; PSNR against the input image and
  the VAE round trip's PSNR (the ceiling that an exact inversion reaches).

    .venv/bin/python benchmarks/shapes_quality.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from diffusers import UNet2DConditionModel

from diffusers_uip2p.evaluation import ddim_round_trip, ddim_steps_for_same_budget, dsi_round_trip
from diffusers_uip2p.shapes.dataset import split_scenes
from diffusers_uip2p.shapes.evaluator import judge_caption
from diffusers_uip2p.shapes.pretrained import load_shapes_clip, load_shapes_pipeline
from diffusers_uip2p.shapes.train_clip import retrieval_top1
from diffusers_uip2p.shapes.training_utils import scenes_to_tensor

ROOT = Path(__file__).resolve().parents[1]


def psnr_per_image(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of [-1, 1] images against references, one value per image."""
    mse = ((images.clamp(-1, 1) - reference) / 2).double().pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


@torch.no_grad()
def vae_round_trip(pipe, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    out = [pipe.vae.decode(pipe.vae.encode(images[i: i + batch_size]).latent_dist.mode()).sample
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def text_to_image(pipe, scenes, steps: int, guidance: float, seed: int, batch_size: int = 25):
    images = []
    for i in range(0, len(scenes), batch_size):
        generator = torch.Generator().manual_seed(seed + i)
        images += pipe([s.caption() for s in scenes[i: i + batch_size]], num_inference_steps=steps,
                       guidance_scale=guidance, generator=generator).images
    return images


@torch.no_grad()
def reconstructions(pipe, scenes, steps: int, guidance: float) -> dict:
    """DSI and DDIM round trips of the scenes' clean latents, batched, with their captions as prompts."""
    images = scenes_to_tensor(scenes)
    latents = pipe.vae.encode(images).latent_dist.mode() * pipe.vae.config.scaling_factor
    model_fn = pipe.guided_model_fn([s.caption() for s in scenes], guidance)
    dsi, dsi_calls = dsi_round_trip(pipe.scheduler, latents, model_fn, steps)
    ddim, ddim_calls = ddim_round_trip(pipe.scheduler.config, latents, model_fn, ddim_steps_for_same_budget(steps))
    decoded = {name: pipe.vae.decode(z.to(latents.dtype) / pipe.vae.config.scaling_factor).sample
               for name, z in (("vae ceiling", latents), ("dsi", dsi), ("ddim", ddim))}
    return {"images": decoded,
            "psnr": {name: psnr_per_image(x, images).mean().item() for name, x in decoded.items()},
            "latent_bitwise_exact": bool(torch.equal(dsi.to(latents.dtype), latents)),
            "unet_calls": {"dsi": dsi_calls, "ddim": ddim_calls}, "ddim_steps": ddim_steps_for_same_budget(steps)}


def object_errors(scenes, verdicts) -> dict[str, int]:
    """What became of each named object in the samples: right, wrong shape (right colour), wrong colour
    (right shape), both wrong, or missing from its cell; and objects drawn where the caption names none."""
    counts = dict.fromkeys(("right", "wrong shape", "wrong colour", "both wrong", "missing", "extra"), 0)
    for scene, verdict in zip(scenes, verdicts, strict=True):
        for wanted in scene.objects:
            seen = verdict.reading.object_at(wanted.row, wanted.column)
            if seen is None:
                counts["missing"] += 1
            else:
                shape, colour = seen.shape == wanted.shape, seen.colour == wanted.colour
                counts[{(True, True): "right", (False, True): "wrong shape", (True, False): "wrong colour",
                        (False, False): "both wrong"}[shape, colour]] += 1
        cells = {(o.row, o.column) for o in scene.objects}
        counts["extra"] += sum((o.row, o.column) not in cells for o in verdict.reading.objects)
    return counts


def to_pil(image: torch.Tensor) -> PIL.Image.Image:
    array = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(array)


def picture(columns: dict[str, list[PIL.Image.Image]], path: Path, scale: int = 3) -> None:
    """A grid: one column per entry, one row per scene, with a header."""
    names, size, header = list(columns), 64 * scale, 18
    rows = len(next(iter(columns.values())))
    grid = PIL.Image.new("RGB", (len(names) * (size + 4), header + rows * (size + 4)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for c, name in enumerate(names):
        draw.text((c * (size + 4) + 4, 3), name, fill="black")
        for r, image in enumerate(columns[name]):
            grid.paste(image.resize((size, size), PIL.Image.NEAREST), (c * (size + 4), header + r * (size + 4)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-vae", type=int, default=500)
    parser.add_argument("--num-retrieval", type=int, default=500, help="test scenes, in groups of 100")
    parser.add_argument("--num-t2i", type=int, default=100)
    parser.add_argument("--t2i-steps", type=int, default=50)
    parser.add_argument("--t2i-guidance", type=float, default=5.0)
    parser.add_argument("--num-reconstruction", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="DSI steps (DDIM gets 2N − 2)")
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 7.5])
    parser.add_argument("--train-scenes", type=int, default=200000, help="T2I training scenes, for the overlap count")
    parser.add_argument("--unet", help="measure this UNet folder in the shipped pipeline (a candidate, before shipping)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "shapes-quality.json"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "shapes-quality.png"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    candidate = {"unet": UNet2DConditionModel.from_pretrained(args.unet)} if args.unet else {}
    pipe = load_shapes_pipeline(**candidate)  # a component override, as diffusers' from_pretrained takes one
    pipe.set_progress_bar_config(disable=True)
    clip, tokenizer, _ = load_shapes_clip()
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "unet": args.unet or "shipped",
              "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
                         f"torch {torch.__version__}", "split": "test"}

    test = split_scenes("test", max(args.num_vae, args.num_retrieval, args.num_t2i, args.num_reconstruction))
    images = scenes_to_tensor(test[: args.num_vae])
    vae_images = vae_round_trip(pipe, images)
    vae_psnr = psnr_per_image(vae_images, images)
    result["vae"] = {"scenes": args.num_vae, "psnr_mean": vae_psnr.mean().item(), "psnr_min": vae_psnr.min().item()}
    print("VAE", result["vae"], flush=True)

    result["clip"] = {"scenes": args.num_retrieval, "group": 100,
                      "top1": retrieval_top1(clip, tokenizer, test[: args.num_retrieval])}
    print("CLIP", result["clip"], flush=True)

    t2i_scenes = test[: args.num_t2i]
    samples = text_to_image(pipe, t2i_scenes, args.t2i_steps, args.t2i_guidance, args.seed)
    verdicts = [judge_caption(s, image) for s, image in zip(t2i_scenes, samples, strict=True)]
    train_captions = {s.caption() for s in split_scenes("train", args.train_scenes)}
    seen = [s.caption() in train_captions for s in t2i_scenes]
    by_objects = {}
    for s, v in zip(t2i_scenes, verdicts, strict=True):
        by_objects.setdefault(len(s.objects), []).append(v.objects_correct)
    result["t2i"] = {
        "captions": args.num_t2i, "steps": args.t2i_steps, "guidance_scale": args.t2i_guidance, "seed": args.seed,
        "objects_correct": float(np.mean([v.objects_correct for v in verdicts])),
        "exact": float(np.mean([v.exact for v in verdicts])),
        "objects_correct_by_object_count": {k: float(np.mean(v)) for k, v in sorted(by_objects.items())},
        "named_objects": object_errors(t2i_scenes, verdicts),
        "captions_also_in_training": int(sum(seen)),
        "objects_correct_on_unseen_captions": float(np.mean([v.objects_correct for v, s in zip(verdicts, seen, strict=True) if not s])),
    }
    print("T2I", result["t2i"], flush=True)

    rec_scenes = test[: args.num_reconstruction]
    result["reconstruction"] = {"scenes": args.num_reconstruction, "dsi_steps": args.steps, "runs": {}}
    columns = {"test scene": [to_pil(x) for x in scenes_to_tensor(rec_scenes[:8])],
               "VAE round trip": [to_pil(x) for x in vae_images[:8]] if args.num_vae >= 8 else [],
               f"T2I sample (g={args.t2i_guidance:g})": samples[:8]}
    for guidance in args.guidance_scales:
        run = reconstructions(pipe, rec_scenes, args.steps, guidance)
        images_by_method = run.pop("images")
        result["reconstruction"]["runs"][str(guidance)] = run
        print(f"reconstruction g={guidance}", run, flush=True)
        columns[f"DSI {args.steps} (g={guidance:g})"] = [to_pil(x) for x in images_by_method["dsi"][:8]]
        columns[f"DDIM {run['ddim_steps']} (g={guidance:g})"] = [to_pil(x) for x in images_by_method["ddim"][:8]]
    result["seconds"] = time.time() - start
    picture(columns, Path(args.picture))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output} and {args.picture}")


if __name__ == "__main__":
    main()
