"""The editing methods on the Shapes world: each method on DSI and on DDIM inversion, per edit category,
and ``auto`` (the task classifier picks the method): the DSI paper's Table 5 at toy scale.

Test-split edits (seeded, never seen in training) are made with the shipped Shapes text-to-image
pipeline: the input scene is rendered, inverted with its exact caption, and edited towards the edited
caption by each method, on DSI (N steps) and on DDIM inversion (2N − 2 steps, the same UNet budget). The
Shapes evaluator judges each output against the true edited scene: success (the asked change happened and
nothing else changed), preserved (nothing else changed), PSNR outside the changed region.

The DSI paper assigns P2P to object replacement and scene editing, MasaCtrl to action editing and SDEdit
to object adding and style editing, and expects the assigned method to win its categories and DSI to
preserve better than DDIM, and ``auto`` to beat every single method on average (Table 5). This script
measures; RESULTS.md reports what it finds. ``auto`` on DDIM runs the method the router chose for DSI.

    .venv/bin/python benchmarks/shapes_editing.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from tqdm.auto import tqdm

from diffusers_uip2p.attention import draw_token_maps
from diffusers_uip2p.evaluation import ddim_steps_for_same_budget
from diffusers_uip2p.evaluation.edit_baselines import ddim_edit
from diffusers_uip2p.evaluation.editors import weights_fingerprint
from diffusers_uip2p.classifier import DEFAULT_TASK_METHODS
from diffusers_uip2p.pipelines.editing import EDIT_METHODS
from diffusers_uip2p.shapes import CATEGORIES, render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.evaluator import aggregate, judge_edit
from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline

ROOT = Path(__file__).resolve().parents[1]
METHODS = (*EDIT_METHODS, "auto")


@torch.no_grad()
def edit_both_ways(pipe, edit, method: str, args) -> tuple[dict[str, PIL.Image.Image], str | None]:
    """The edit on DSI and on DDIM, and (for ``auto``) the task the router decided."""
    source, target = edit.input_caption, edit.edited_caption
    image = render(edit.source)
    dsi = pipe(target, image=image, source_prompt=source, edit_method=method, num_inference_steps=args.steps,
               guidance_scale=args.guidance_scale, output_type="latent")
    _, ddim, _ = ddim_edit(pipe, pipe.encode_images(pipe.preprocess_images(image)), [source, target],
                           ddim_steps_for_same_budget(args.steps), args.guidance_scale, dsi.edit_method)
    images = {"dsi": pipe.decode_latents_to_images(dsi.latents)[0], "ddim": pipe.decode_latents_to_images(ddim)[0]}
    return images, dsi.edit_task


def markdown(summary: dict) -> str:
    lines = ["| category | method | DSI success | DDIM success | DSI preserved | DDIM preserved | "
             "DSI PSNR outside (dB) | DDIM PSNR outside (dB) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for category in [*CATEGORIES, "all"]:
        for method in METHODS:
            d, m = summary["dsi"][method].get(category), summary["ddim"][method].get(category)
            if d is None:
                continue
            mark = " (assigned)" if DEFAULT_TASK_METHODS.get(category) == method else ""
            lines.append(f"| {category} (n={d['count']}) | {method}{mark} | {d['success']:.2f} | {m['success']:.2f} | "
                         f"{d['preserved']:.2f} | {m['preserved']:.2f} | {d['psnr_outside']:.1f} | "
                         f"{m['psnr_outside']:.1f} |")
    return "\n".join(lines)


def picture(examples: list, path: Path, scale: int = 2) -> None:
    """One row per example: input, true edit, then each method on DSI and on DDIM."""
    size, header = 64 * scale, 14
    columns = ["input", "true edit"] + [f"{m} {inv}" for m in METHODS for inv in ("DSI", "DDIM")]
    grid = PIL.Image.new("RGB", (len(columns) * (size + 2), header + len(examples) * (size + 2)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for c, name in enumerate(columns):
        draw.text((c * (size + 2) + 2, 1), name, fill="black")
    for r, images in enumerate(examples):
        for c, image in enumerate(images):
            grid.paste(image.resize((size, size), PIL.Image.NEAREST), (c * (size + 2), header + r * (size + 2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


@torch.no_grad()
def attention_picture(pipe, edit, args, path: Path) -> None:
    """Per-token cross-attention of the target prompt during a P2P edit, drawn over the edited image."""
    out = pipe(edit.edited_caption, image=render(edit.source), source_prompt=edit.input_caption, edit_method="p2p",
               num_inference_steps=args.steps, guidance_scale=args.guidance_scale, return_attention_maps=True)
    draw_token_maps(out.images[0], out.attention_maps[0], cell_size=96, columns=10).save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-edits", type=int, default=50)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--model", help="pipeline folder (default: the shipped Shapes pipeline)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "shapes-editing.json"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "shapes-editing.png"))
    parser.add_argument("--attention-picture", default=str(ROOT / "docs" / "images" / "shapes-attention.png"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers_uip2p import AutoEditPipeline

    pipe = AutoEditPipeline.from_pretrained(args.model) if args.model else load_shapes_pipeline()
    pipe.set_progress_bar_config(disable=True)
    edits = split_edits("test", args.num_edits)
    judgements = {inv: {m: [] for m in METHODS} for inv in ("dsi", "ddim")}
    routed = []  # (true category, task the router decided)
    examples, shown = [], set()
    start = time.time()
    for edit in tqdm(edits, desc="edits"):
        row = [render(edit.source), render(edit.target)]
        for method in METHODS:
            outputs, task = edit_both_ways(pipe, edit, method, args)
            if method == "auto":
                routed.append((edit.category, task))
            for inv, image in outputs.items():
                judgements[inv][method].append(judge_edit(edit.source, edit.instruction, image, edit.category))
                row.append(image)
        if edit.category not in shown:
            shown.add(edit.category)
            examples.append(row)
    summary = {inv: {m: aggregate(js) for m, js in by_method.items()} for inv, by_method in judgements.items()}
    router = "classifier" if pipe.task_classifier is not None else "rules"
    routing_accuracy = sum(true == task for true, task in routed) / len(routed)
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "split": "test",
              "num_edits": args.num_edits, "steps": args.steps, "ddim_steps": ddim_steps_for_same_budget(args.steps),
              "guidance_scale": args.guidance_scale, "weights": weights_fingerprint(pipe),
              "seconds": time.time() - start, "summary": summary,
              "assigned": DEFAULT_TASK_METHODS, "router": router, "routing_accuracy": routing_accuracy,
              "torch_threads": torch.get_num_threads()}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2, default=float) + "\n")
    picture(examples, Path(args.picture))
    attention_picture(pipe, next(e for e in edits if e.kind == "colour_change"), args, Path(args.attention_picture))
    print(markdown(summary))
    print(f"auto routed by {router}: task right for {routing_accuracy:.2f} of {len(routed)} edits")
    print(f"wrote {args.output}, {args.picture} and {args.attention_picture}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
