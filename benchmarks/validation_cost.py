"""What the input-validation layer costs: its checks of one call (image normalisation, number checks, the
inversion's model signature, computed twice: at inversion and at sampling) against the whole 25-step edit
on the tiny random pipeline, where it weighs most (on a real model the edit is far slower, the checks not).

    .venv/bin/python benchmarks/validation_cost.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffusers_uip2p import AutoEditPipeline
from diffusers_uip2p.pipelines.validation import check_finite, check_guidance, check_number, check_steps, to_unit_pixels
from diffusers_uip2p.testing import tiny_text_to_image_components

ROOT = Path(__file__).resolve().parents[1]


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "validation-cost-tiny-cpu.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = AutoEditPipeline(**tiny_text_to_image_components())
    pipe.set_progress_bar_config(disable=True)
    image = np.random.RandomState(0).randint(0, 256, (16, 16, 3), np.uint8)

    def edit():
        pipe("a blue circle", image=image, source_prompt="a red circle", edit_method="p2p", num_inference_steps=25,
             guidance_scale=5.0, output_type="latent")

    def checks():  # what one such call validates, twice the signature (invert and sample)
        to_unit_pixels(image, "image", pipe.vae_scale_factor)
        check_steps(25, minimum=2)
        check_guidance(5.0)
        check_number(None, "strength", low=0.0, low_open=True, high=1.0, optional=True)
        check_finite(None, "latents")
        pipe.model_signature()
        pipe.model_signature()

    edit()  # warm up
    edit_seconds, check_seconds = best_of(edit, args.repeats), best_of(checks, args.repeats * 20)
    result = {"command": "python benchmarks/validation_cost.py" + (f" --threads {args.threads}" if args.threads else ""),
              "edit_seconds": edit_seconds, "validation_seconds": check_seconds,
              "ratio": (edit_seconds + check_seconds) / edit_seconds, "torch_threads": torch.get_num_threads()}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
