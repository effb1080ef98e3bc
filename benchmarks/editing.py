"""Benchmark: the editing methods on DSI against the same methods on DDIM inversion, and what attention
control costs.

For each method (direct, p2p, masactrl, sdedit) one image is edited from a source to a target prompt:

* DSI: ``AutoEditPipeline(prompt, inversion=..., edit_method=...)`` (inverts the clean latents in the
  [source, target] layout, then samples), N primary steps;
* DDIM: `baseline_edit` (DDIM inversion) with the same controllers and layout, at M = 2N − 2 steps (the same UNet budget;
  calls are counted and reported).

Both start from the same clean latents; the VAE and the text encoder are outside the comparison as much as
the pipeline allows (the DSI call also encodes the two prompts). Time: median of ``--repeats`` runs after
a warm-up; memory: peak growth as in `benchmarks/inversion.py`. It also times one UNet call (batch
[source, target] × guidance) with plain SDPA, with an `AttentionStore` recording cross-attention, and with
the P2P controller installed: the capture overhead.

    .venv/bin/python benchmarks/editing.py --threads 1
    .venv/bin/python benchmarks/editing.py --arch sd15 --steps 3 --repeats 1 --threads 1
    .venv/bin/python benchmarks/editing.py --arch sd15 --size 256 --steps 3 --repeats 1 --threads 1  # CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import (  # noqa: E402
    add_run_arguments,
    build_pipeline,
    environment,
    load_image,
    memory_method,
    parse_run_arguments,
    save_report,
    timed,
)

from diffusers_uip2p.attention import AttentionController, AttentionStore, attention_control  # noqa: E402
from diffusers_uip2p.evaluation import ddim_steps_for_same_budget  # noqa: E402
from diffusers_uip2p.evaluation.edit_baselines import baseline_edit  # noqa: E402
from diffusers_uip2p.pipelines.editing import EDIT_METHODS, plan_edit  # noqa: E402

SOURCE = "a yellow circle on a green background"  # short: the tiny model's byte-level tokenizer fits 75 bytes
TARGET = "a blue circle on a green background"


def bench_method(pipe, inversion, method: str, args) -> dict:
    calls = []
    hook = pipe.unet.register_forward_pre_hook(lambda *_: calls.append(1))
    runs = {"dsi": lambda: pipe(TARGET, inversion=inversion, source_prompt=SOURCE, edit_method=method,
                                output_type="latent"),
            "ddim": lambda: baseline_edit(pipe, inversion.latents, [SOURCE, TARGET],
                                          ddim_steps_for_same_budget(args.steps), args.guidance_scale, method)}
    row = {}
    try:
        for name, run in runs.items():
            run()  # warm-up
            calls.clear()
            measured = [timed(args.device, run) for _ in range(args.repeats)]
            row[name] = {"seconds_median": statistics.median(m[0] for m in measured),
                         "peak_mib_max": max(m[1] for m in measured) / 2**20,
                         "unet_calls": len(calls) // args.repeats}
            if name == "dsi":
                row[name]["source_branch_bitwise_exact"] = bool(torch.equal(measured[-1][2].source_latents,
                                                                            inversion.latents))
    finally:
        hook.remove()
    row["time_ratio_dsi_over_ddim"] = row["dsi"]["seconds_median"] / row["ddim"]["seconds_median"]
    return row


def bench_capture(pipe, inversion, args) -> dict:
    """One UNet call on the [source, target] batch with guidance, under three processor set-ups."""
    latents = inversion.latents.expand(4 if args.guidance_scale > 1 else 2, -1, -1, -1).contiguous()
    embeds = pipe._encode_prompts([SOURCE, TARGET], None, None, None, args.guidance_scale)
    context = torch.cat([embeds[1], embeds[0]]) if args.guidance_scale > 1 else embeds[0]
    t = pipe.scheduler.timesteps[0] if pipe.scheduler.timesteps is not None else torch.tensor(500)
    store_controller = AttentionController()
    AttentionStore(store_controller)
    p2p = plan_edit("p2p", [SOURCE, TARGET], pipe.tokenizer).controller
    setups = {"plain SDPA": None, "AttentionStore (cross-attention, 2 lowest levels)": store_controller,
              "P2P controller": p2p}
    out = {}
    for name, controller in setups.items():
        def call():
            return pipe.unet(latents, t, encoder_hidden_states=context).sample

        if controller is None:
            run = call
        else:
            controller.configure(2, args.guidance_scale > 1)
            controller.set_step(0, 10)

            def run(controller=controller):
                with attention_control(pipe.unet, controller):
                    return call()
        with torch.no_grad():
            run()
            times = [timed(args.device, lambda run=run: torch.no_grad()(run)())[0] for _ in range(args.repeats * 3)]
        out[name] = statistics.median(times)
    base = out["plain SDPA"]
    return {name: {"seconds_median": s, "ratio_to_plain": s / base} for name, s in out.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: 512 for sd15, the bundled sample's for tiny)")
    parser.add_argument("--steps", type=int, default=25, help="DSI primary steps N; DDIM gets 2N − 2")
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3)
    add_run_arguments(parser)
    args = parse_run_arguments(parser, argv)
    pipe = build_pipeline(args.arch, args.device, torch.float32)
    image = load_image(args.arch, args.size)
    inversion = pipe.invert(image, SOURCE, num_inference_steps=args.steps,
                            guidance_scale=args.guidance_scale, output_type="latent")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "arch": args.arch, "size": image.size[0],
              "steps": args.steps,
              "ddim_steps": ddim_steps_for_same_budget(args.steps), "guidance_scale": args.guidance_scale,
              "memory": memory_method(args.device), "methods": {}}
    for method in EDIT_METHODS:
        report["methods"][method] = bench_method(pipe, inversion, method, args)
        print(method, json.dumps(report["methods"][method]), flush=True)
    report["capture"] = bench_capture(pipe, inversion, args)
    report["environment"] = environment(args.device)
    print(json.dumps(report["capture"], indent=1))
    suffix = f"-{args.size}px" if args.size else ""
    save_report(report, args.output, f"editing-{args.arch}{suffix}-N{args.steps}-{args.device}.json")


if __name__ == "__main__":
    main()
