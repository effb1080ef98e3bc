"""Benchmark: a Shapes training step that encodes its images every step (as diffusers'
``train_instruct_pix2pix.py`` does) against one that reads latents encoded ahead (``--encoded_records``).

The step is what `train_uip2p` runs per micro-batch: the loss (`supervised_step`, or `erc_step` with the
denoising anchor), ``backward()``, ``AdamW.step()`` and ``zero_grad()``, on the shipped Shapes models (the
supervised editor's UNet, the pipeline's VAE and text encoder, the Shapes CLIP) and real exported Shapes
training records, at the recipe's micro-batch (32 at 64×64). AdamW's learning rate is 0 (``--lr``), so every
step sees the same weights. Each pair of rows shares the batch, the seed and the weights; the check that the
two losses are equal to every digit is part of the report. Rows are interleaved; time is the median of
``--repeats`` after one warm-up.

    .venv/bin/python benchmarks/encoded_records.py --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from diffusers_uip2p.shapes.dataset import export_jsonl, split_edits
from diffusers_uip2p.shapes.pretrained import load_shapes_clip, load_shapes_pipeline, shapes_model_path
from diffusers_uip2p.training import encoded_records
from diffusers_uip2p.training.data import collate_edit_records, open_edit_dataset
from diffusers_uip2p.training.encoded_records import EncodedRecords
from diffusers_uip2p.training.erc import EditModels, ERCConfig, erc_step, supervised_step
from diffusers_uip2p.training.losses import CLIPEmbedder, ERCLossWeights

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import environment, save_report  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.0)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = load_shapes_pipeline(StableDiffusionPipeline)
    clip_model, clip_tokenizer, _ = load_shapes_clip()
    every_step = EditModels.from_pipeline(base, CLIPEmbedder(clip_model, clip_tokenizer))
    unet = UNet2DConditionModel.from_pretrained(shapes_model_path("ip2p"), subfolder="unet").train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr)
    with tempfile.TemporaryDirectory() as folder:
        records = Path(folder) / "records"
        export_jsonl(split_edits("train", args.batch_size), records)
        latents = Path(folder) / "latents.safetensors"
        encoded_records.main(["--pretrained_model_name_or_path", str(shapes_model_path("pipeline")),
                              "--train_data", str(records), "--resolution", "64", "--output", str(latents)])
        dataset = open_edit_dataset(records, resolution=64, require_edited=True)
        batch = collate_edit_records([dataset[i] for i in range(len(dataset))])
        ahead = dataclasses.replace(every_step, encoded=EncodedRecords(
            latents, source=records, resolution=64, vae=base.vae, keys=("pixel_values", "edited_pixel_values")))

        config = ERCConfig(conditioning_dropout_prob=0.0)
        erc_config = ERCConfig(ERCLossWeights(denoise=100.0), conditioning_dropout_prob=0.0)

        def step(loss_fn, models):
            def run():
                loss = loss_fn(models, torch.Generator().manual_seed(0))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                return loss.item()
            return run

        def supervised(models, generator):
            return supervised_step(unet, models, batch, config, generator)

        def erc(models, generator):
            return erc_step(unet, models, batch, erc_config, generator).loss

        rows = {"supervised, encoding every step": step(supervised, every_step),
                "supervised, encoded records": step(supervised, ahead),
                "ERC + anchor, encoding every step": step(erc, every_step),
                "ERC + anchor, encoded records": step(erc, ahead)}
        losses = {name: run() for name, run in rows.items()}  # warm-up (and AdamW's state)
        seconds = {name: [] for name in rows}
        for repeat in range(args.repeats):
            for name, run in rows.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
                print(f"run {repeat + 1}/{args.repeats} {name}: {seconds[name][-1]:.3f} s", flush=True)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    pairs = {kind: {"time_ratio": median[f"{kind}, encoded records"] / median[f"{kind}, encoding every step"],
                    "same_loss": losses[f"{kind}, encoded records"] == losses[f"{kind}, encoding every step"]}
             for kind in ("supervised", "ERC + anchor")}
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "batch_size": args.batch_size,
              "resolution": 64, "repeats": args.repeats, "lr": args.lr, "losses": losses,
              "seconds_median": median, "seconds_all": seconds, "pairs": pairs, "environment": environment("cpu")}
    print(f"\nShapes models, batch {args.batch_size} at 64×64, CPU, {torch.get_num_threads()} thread(s); "
          f"median of {args.repeats} after a warm-up\n")
    print("| step | median s | × encoding every step | same loss |\n|---|---:|---:|---|")
    for kind, pair in pairs.items():
        for name in (f"{kind}, encoding every step", f"{kind}, encoded records"):
            ratio = 1.0 if name.endswith("every step") else pair["time_ratio"]
            print(f"| {name} | {median[name]:.3f} | {ratio:.2f} | {pair['same_loss']} |")
    save_report(report, args.output, f"encoded-records-shapes-b{args.batch_size}-cpu.json")
    return report


if __name__ == "__main__":
    main()
