"""Benchmark: what a target-branch rule costs per sampling step, against the paper's coupled rule.

One image is inverted once in the [source, target] layout; then the same sampling loop
(`DualScheduleInversionScheduler.sample` with the guided [source, target] model function) runs with the
target row on each rule, interleaved over ``--repeats`` rounds so that load changes hit every rule alike.
Reported: the median seconds per model evaluation and its ratio to coupled (the UNet calls are the same
for every rule; only the scheduler's arithmetic differs), the scheduler's own time per evaluation with a
model that costs nothing, and the peak memory of the loop.

    .venv/bin/python benchmarks/branch_rules.py --threads 1                 # the shipped Shapes pipeline
    .venv/bin/python benchmarks/branch_rules.py --arch sd15 --steps 5       # SD 1.5's architecture, random weights, 512 px
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import add_run_arguments, build_pipeline, environment, load_image, parse_run_arguments, save_report, timed  # noqa: E402

from diffusers_uip2p.schedulers import BRANCH_RULES  # noqa: E402

SOURCE = "a yellow circle on a green background"
TARGET = "a blue circle on a green background"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("shapes", "sd15"), default="shapes")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=5)
    add_run_arguments(parser)
    args = parse_run_arguments(parser, argv)
    if args.arch == "shapes":
        from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline

        pipe = load_shapes_pipeline().to(args.device)
        pipe.set_progress_bar_config(disable=True)
        image = load_image("tiny", 64)
    else:
        pipe, image = build_pipeline("sd15", args.device, torch.float32), load_image("sd15")
    latents = pipe.encode_images(pipe.preprocess_images(image)).to(args.device)
    model_fn = pipe.guided_model_fn([SOURCE, TARGET], args.guidance_scale)
    scheduler = pipe.scheduler
    scheduler.set_timesteps(args.steps, device=args.device)
    with torch.no_grad():
        state = scheduler.invert(latents.expand(2, -1, -1, -1).contiguous(), pipe.guided_model_fn([SOURCE] * 2, args.guidance_scale))
    rules = {rule: ["coupled", rule if rule != "anchored" else ("anchored", 0)] for rule in BRANCH_RULES}
    evaluations = len(scheduler.timesteps)
    seconds = {rule: [] for rule in rules}
    peaks = {}
    with torch.no_grad():
        scheduler.sample(state, model_fn, branch_rules=rules["coupled"])  # warm-up
        for _ in range(args.repeats):
            for rule, branch_rules in rules.items():
                elapsed, peak, _ = timed(args.device, lambda: scheduler.sample(state, model_fn, branch_rules=branch_rules))
                seconds[rule].append(elapsed / evaluations)
                peaks[rule] = max(peaks.get(rule, 0), peak)
    # The scheduler's own arithmetic, with a model that costs nothing (a fixed output): what a rule adds.
    fixed = torch.zeros_like(state.primary, dtype=latents.dtype)
    arithmetic = {rule: [] for rule in rules}
    with torch.no_grad():
        for _ in range(args.repeats):
            for rule, branch_rules in rules.items():
                elapsed, _, _ = timed(args.device, lambda: scheduler.sample(state, lambda x, t: fixed, branch_rules=branch_rules))
                arithmetic[rule].append(elapsed / evaluations)
    coupled = statistics.median(seconds["coupled"])
    table = {rule: {"seconds_per_evaluation": statistics.median(s), "ratio_to_coupled": statistics.median(s) / coupled,
                    "scheduler_seconds_per_evaluation": statistics.median(arithmetic[rule]),
                    "peak_bytes": peaks[rule], "runs": s} for rule, s in seconds.items()}
    for rule, row in table.items():
        print(f"{rule:9s} {row['seconds_per_evaluation'] * 1e3:8.2f} ms per model evaluation   "
              f"{row['ratio_to_coupled']:.3f}x coupled   scheduler alone {row['scheduler_seconds_per_evaluation'] * 1e3:.3f} ms   "
              f"peak {row['peak_bytes'] / 2**20:.1f} MiB")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "arch": args.arch, "steps": args.steps,
              "model_evaluations": evaluations, "guidance_scale": args.guidance_scale, "repeats": args.repeats,
              "rules": table, "environment": environment(args.device)}
    save_report(report, args.output, f"branch-rules-{args.arch}-N{args.steps}-{args.device}.json")
    return report


if __name__ == "__main__":
    main()
