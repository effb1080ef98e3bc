"""Benchmark: UIP2PPipeline against diffusers' StableDiffusionInstructPix2PixPipeline, in one process, on the
same components, image, instruction and seed; and what the reverse self-check and candidate ranking cost.

Rows (all with ``output_type="np"``, i.e. including the VAE decode):

* ``ip2p``: the parent pipeline's plain call;
* ``uip2p``: UIP2PPipeline's plain call (it delegates to the parent: expected ratio ~1, bitwise equal output,
  checked and reported);
* ``uip2p + reverse``: ``reverse_instruction=`` (one more edit, one VAE decode, one VAE encode);
* ``uip2p + reverse, k candidates``: ``num_candidates=k`` (k checked edits, one after another);
* ``uip2p + attention maps``: ``return_attention_maps=True`` (explicit softmax on the recorded layers).

Time: ``time.perf_counter``, one warm-up per row, then the median of ``--repeats`` runs, rows interleaved.
Memory: peak growth over a baseline taken just before each run, as in `benchmarks/inversion.py`
(CUDA: ``torch.cuda.max_memory_allocated``; CPU: RSS sampled every 5 ms, approximate); the largest over the
timed runs. ``--arch sd15`` uses Stable Diffusion 1.5's InstructPix2Pix architecture with random weights
(about 4 GiB in float32, nothing downloaded); random weights make outputs meaningless but not the cost.

    .venv/bin/python benchmarks/uip2p.py --arch tiny --threads 1
    .venv/bin/python benchmarks/uip2p.py --arch sd15 --size 256 --steps 3 --repeats 1 --threads 1
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import (  # noqa: E402
    add_run_arguments,
    environment,
    load_image,
    memory_method,
    parse_run_arguments,
    save_report,
    timed,
)

from diffusers_uip2p import UIP2PPipeline  # noqa: E402
from diffusers_uip2p.testing import (  # noqa: E402
    IP2P_SCHEDULER_CONFIG,
    sd15_components,
    tiny_instruct_pix2pix_components,
)

FORWARD, REVERSE = "turn the circle blue", "turn the circle yellow"  # short: the byte-level tokenizer fits 75 bytes


def build(arch: str, device: str):
    from diffusers import EulerAncestralDiscreteScheduler

    components = sd15_components(in_channels=8) if arch == "sd15" else tiny_instruct_pix2pix_components()
    components["scheduler"] = EulerAncestralDiscreteScheduler.from_config(IP2P_SCHEDULER_CONFIG)
    options = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    parent = StableDiffusionInstructPix2PixPipeline(**components, **options)
    if device != "cpu":
        parent = parent.to(device)
    child = UIP2PPipeline.from_pipe(parent)  # the same modules: only the code differs
    for pipe in (parent, child):
        pipe.set_progress_bar_config(disable=True)
    return parent, child


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--size", type=int, default=None, help="image side (default: 64 tiny, 256 sd15)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 20 tiny, 3 sd15)")
    parser.add_argument("--candidates", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    add_run_arguments(parser)
    args = parse_run_arguments(parser, argv)
    size = args.size or (256 if args.arch == "sd15" else 64)
    steps = args.steps or (3 if args.arch == "sd15" else 20)
    image = load_image(args.arch, size)
    parent, child = build(args.arch, args.device)

    def call(pipe, **kwargs):
        return lambda: pipe(FORWARD, image=image, num_inference_steps=steps, output_type="np",
                            generator=torch.Generator().manual_seed(0), **kwargs)

    rows = {
        "ip2p": call(parent),
        "uip2p": call(child),
        "uip2p + reverse": call(child, reverse_instruction=REVERSE),
        f"uip2p + reverse, {args.candidates} candidates": call(child, reverse_instruction=REVERSE,
                                                                  num_candidates=args.candidates, seed=0),
        "uip2p + attention maps": call(child, return_attention_maps=True),
    }
    for run in rows.values():
        run()  # warm-up
    measured = {name: [] for name in rows}
    for _ in range(args.repeats):  # interleaved, so that load changes hit every row alike
        for name, run in rows.items():
            measured[name].append(timed(args.device, run))
    base = statistics.median(m[0] for m in measured["ip2p"])
    results = {name: {"seconds_median": statistics.median(m[0] for m in runs),
                      "time_ratio_to_ip2p": statistics.median(m[0] for m in runs) / base,
                      "peak_mib_max": max(m[1] for m in runs) / 2**20} for name, runs in measured.items()}
    bitwise = bool(np.array_equal(measured["ip2p"][-1][2].images, measured["uip2p"][-1][2].images))
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "arch": args.arch, "size": size,
              "steps": steps, "repeats": args.repeats, "memory": memory_method(args.device),
              "plain_call_bitwise_equal_to_ip2p": bitwise, "rows": results, "environment": environment(args.device)}
    print(f"{args.arch}, {size}×{size}, {steps} steps, {args.device}, {torch.get_num_threads()} thread(s); "
          f"plain call bitwise equal to IP2P: {bitwise}\n")
    print("| pipeline | median s | × IP2P | peak MiB |\n|---|---:|---:|---:|")
    for name, row in results.items():
        print(f"| {name} | {row['seconds_median']:.3f} | {row['time_ratio_to_ip2p']:.2f} | {row['peak_mib_max']:.1f} |")
    save_report(report, args.output, f"uip2p-{args.arch}-{size}px-N{steps}-{args.device}.json")
    return report


if __name__ == "__main__":
    main()
