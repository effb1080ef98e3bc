"""Benchmark: Dual-Schedule Inversion (DSI) against diffusers' DDIM inversion at the same UNet budget.

Both methods invert the same clean latents (the VAE encoding of the same image) with the same model, the
same prompt and the same classifier-free guidance, then sample back with that prompt:

* DSI: ``DualScheduleInversionScheduler`` at N primary steps (``dsi_round_trip``);
* DDIM: ``DDIMInverseScheduler`` then ``DDIMScheduler`` at M = 2N − 2 steps (``ddim_round_trip``), which
  spends about as many UNet calls. The calls are counted, not assumed, and reported for both.

For each guidance scale and method it measures

* latent relative error ‖ẑ − z‖ / ‖z‖ against the clean latents that were inverted, and whether the
  reconstruction is bitwise equal to them;
* PSNR of the decoded reconstruction against the VAE round trip (the decode of the clean latents), the
  ceiling of any latent-space inversion;
* wall time of inversion + reconstruction (latent space only: no VAE, no text encoder, no model
  construction), with ``time.perf_counter``: one warm-up run per method, then the median of ``--repeats``
  runs, DSI and DDIM interleaved;
* peak memory of the same runs, as growth over a baseline taken just before each run. On CUDA:
  ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before the run. On a CPU: the process
  RSS (``/proc/self/statm``) sampled every 5 ms by a background thread, peak minus the RSS before the run,
  after ``gc.collect()`` and glibc ``malloc_trim(0)`` so that memory freed by the previous run is not
  counted as baseline reuse. RSS sampling misses spikes shorter than 5 ms and counts allocator slack, so
  treat CPU figures as approximate; the largest value over the timed runs is reported.

It also measures how fragile exactness is: DSI returns the clean latents bit for bit only when sampling
hands the model bitwise-identical inputs to those of inversion. The row "DSI, sampled in a batch of 2"
inverts with batch 1 and samples the same state repeated to batch 2 (prompt encoded as [prompt, prompt]);
the UNet kernels for another batch size may round differently in the last bits, and the coupled chain
amplifies that. Its error is taken on the first image of the batch. To show the seed of the divergence, the
first sampling call is also made in both batch sizes on the same latent, and the difference of the UNet
outputs is reported (max absolute, relative L2, median in ulps of the batch-1 output, fraction of elements
that differ).

Usage (from the repository root)::

    .venv/bin/python benchmarks/inversion.py                                   # tiny random model, 64×64
    .venv/bin/python benchmarks/inversion.py --arch sd15 --steps 5 --guidance-scales 7.5 --repeats 1

On a CPU that other jobs share, add ``--threads 1``: oversubscribed OpenMP threads can make each UNet call
tens of times slower.

``--arch sd15`` builds Stable Diffusion 1.5's architecture with random weights (about 4 GiB in float32;
nothing is downloaded) and resizes the bundled sample to 512×512. Random weights make absolute PSNR
meaningless, but exactness does not depend on the weights. Results go to stdout as markdown tables and to
``--output`` as JSON, together with the exact command line and the environment.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import diffusers
import PIL.Image
import torch
from tqdm.auto import tqdm

from diffusers_uip2p.evaluation import (
    CountingModelFn,
    ddim_round_trip,
    ddim_steps_for_same_budget,
    dsi_round_trip,
    psnr,
    relative_error,
)
from diffusers_uip2p.pipelines import AutoEditPipeline
from diffusers_uip2p.pipelines.inversion import repeat_state

PROMPT = "a red circle left of a blue square and a green triangle on a yellow background"
DSI, DDIM, DSI_BATCH2 = "DSI", "DDIM", "DSI, sampled in a batch of 2 (source+copy) after batch-1 inversion"
MIB = 2**20


# ---------------------------------------------------------------------------------------------- setup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny",
                        help="tiny random model on the 64×64 sample, or SD-1.5's architecture with random "
                             "weights on the sample resized to 512×512 (default tiny)")
    parser.add_argument("--steps", type=int, default=50,
                        help="DSI primary steps N; DDIM gets 2N-2 (default 50; for sd15 on a CPU try 5, or 3 on a "
                             "slow or shared one)")
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 4.0, 7.5],
                        help="classifier-free guidance scales, each a separate table (default: 1 4 7.5)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu",
                        help="default cuda when available, else cpu")
    parser.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                        help="model dtype (the VAE always runs in float32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice); on a CPU shared with other "
                             "jobs, 1 avoids the large slowdowns of oversubscribed OpenMP threads")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--output", default="benchmarks/results", help="folder for the JSON report")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.steps < 2:
        parser.error("--steps must be at least 2 (DSI needs two primary timesteps)")
    return args


def build_pipeline(arch: str, device: str, dtype: torch.dtype) -> AutoEditPipeline:
    from diffusers_uip2p.testing import sd15_components, tiny_text_to_image_components

    components = sd15_components(dtype=dtype) if arch == "sd15" else tiny_text_to_image_components()
    pipe = AutoEditPipeline(**components).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_image(arch: str, size: int | None = None) -> PIL.Image.Image:
    """The bundled sample at ``size`` pixels; by default 512 for sd15 and its own size for tiny."""
    image = PIL.Image.open(resources.files("diffusers_uip2p") / "assets" / "sample.png").convert("RGB")
    size = size or (512 if arch == "sd15" else None)
    return image.resize((size, size), PIL.Image.BICUBIC) if size else image


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """--device, --threads and --output, which every ratio benchmark takes."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default="benchmarks/results")


def parse_run_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, then pin torch's thread count if asked (oversubscribed threads make CPU timings meaningless)."""
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def save_report(report: dict, folder: str, name: str) -> Path:
    """Write a benchmark's JSON report as ``folder/name`` and say where."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def environment(device: str) -> dict:
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        device_name = f"CPU: {names[0] if names else platform.processor()}"
    return {
        "python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "platform": platform.platform(), "device": device, "device_name": device_name,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "load_average_1_5_15min_at_end": os.getloadavg(),
    }


# ---------------------------------------------------------------------------------------------- memory


def _release_freed_memory():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class PeakMemory:
    """Context manager: ``peak_bytes`` is the peak memory growth over the baseline taken on entry."""

    PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def __init__(self, device: str, interval_s: float = 0.005):
        self.device, self.interval_s, self.peak_bytes = device, interval_s, None

    @classmethod
    def rss(cls) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * cls.PAGE

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, self.rss())
            self._stop.wait(self.interval_s)

    def __enter__(self):
        _release_freed_memory()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._baseline = torch.cuda.memory_allocated()
        else:
            self._baseline = self._peak = self.rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self.rss())
        self.peak_bytes = peak - self._baseline
        return False


def memory_method(device: str) -> str:
    if device == "cuda":
        return "torch.cuda.max_memory_allocated() minus memory_allocated() before the run"
    return ("process RSS from /proc/self/statm sampled every 5 ms by a background thread, peak minus the RSS "
            "before the run (after gc.collect() and malloc_trim(0)); approximate")


# ---------------------------------------------------------------------------------------------- runs


class Progress(CountingModelFn):
    """Counts UNet calls into a shared progress bar (the per-run call counts come from the round trips)."""

    def __init__(self, model_fn, bar: tqdm):
        super().__init__(model_fn)
        self.bar = bar

    def __call__(self, sample, timestep):
        self.bar.update()
        return super().__call__(sample, timestep)


def timed(device: str, run) -> tuple[float, int, object]:
    """``run()`` under the clock and the peak-memory probe: (seconds, peak bytes, its result)."""
    with PeakMemory(device) as memory:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = run()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seconds, memory.peak_bytes, result


def timed_run(method: str, pipe, latents, model_fn, steps: int, device: str) -> dict:
    """One inversion + reconstruction; returns reconstruction, UNet calls, seconds and peak memory."""
    def run():
        if method == DSI:
            return dsi_round_trip(pipe.scheduler, latents, model_fn, steps)
        return ddim_round_trip(pipe.scheduler.config, latents, model_fn, ddim_steps_for_same_budget(steps))

    seconds, peak_bytes, (reconstruction, calls) = timed(device, run)
    return {"reconstruction": reconstruction, "unet_calls": calls, "seconds": seconds, "peak_bytes": peak_bytes}


def accuracy(pipe, reconstruction, latents, ceiling) -> dict:
    images = pipe.decode_latents_to_images(reconstruction, "pt")
    return {
        "latent_relative_error": relative_error(reconstruction, latents),
        "bitwise_exact": bool(torch.equal(reconstruction.to(latents.dtype), latents)),
        "max_abs_latent_error": (reconstruction.double() - latents.double()).abs().max().item(),
        "psnr_vs_vae_round_trip_db": psnr(images, ceiling),
    }


def first_call_difference(model_fn, model_fn2, state, timestep) -> dict:
    """The seed of the divergence: the model's output on the same latent, alone and in a batch of 2."""
    single = model_fn(state.model_input(), timestep)
    batched = model_fn2(repeat_state(state, 2).model_input(), timestep)[:1]
    diff = (batched.double() - single.double()).abs()
    ulp = (torch.nextafter(single.abs(), torch.tensor(float("inf"), dtype=single.dtype)) - single.abs()).double()
    return {"max_abs": diff.max().item(), "relative": (diff.norm() / single.double().norm()).item(),
            "median_ulps": (diff / ulp).median().item(),
            "fraction_of_elements_differing": (diff > 0).double().mean().item()}


def batch2_sensitivity(pipe, latents, model_fn, prompt: str, guidance_scale: float, steps: int, bar) -> dict:
    """Invert with batch 1, sample the repeated state with batch 2; error of the first image. Also compares
    the first sampling call's output in both batch sizes (two extra UNet calls, not part of the count)."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(steps, device=latents.device)
    state = scheduler.invert(latents, model_fn)
    model_fn2 = pipe.guided_model_fn([prompt, prompt], guidance_scale)
    first_call = first_call_difference(model_fn, model_fn2, state, scheduler.timesteps[0])
    counted2 = Progress(model_fn2, bar)
    reconstruction = scheduler.sample(repeat_state(state, 2), counted2)
    return {"reconstruction": reconstruction[:1], "sampling_unet_calls": counted2.calls,
            "batch_rows_identical": bool(torch.equal(reconstruction[0], reconstruction[1])),
            "first_sampling_call_output_batch2_vs_batch1": first_call}


def bench_guidance(pipe, latents, ceiling, args, guidance_scale: float, bar: tqdm) -> dict:
    """All measurements at one guidance scale."""
    model_fn = Progress(pipe.guided_model_fn([args.prompt], guidance_scale), bar)
    runs = {DSI: [], DDIM: []}
    with torch.no_grad():
        for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up
            for method in (DSI, DDIM):
                bar.set_description(f"g={guidance_scale:g} {method} {'warm-up' if repeat == 0 else f'run {repeat}'}")
                runs[method].append(timed_run(method, pipe, latents, model_fn, args.steps, args.device))
        bar.set_description(f"g={guidance_scale:g} DSI batch-2 sampling")
        batch2 = batch2_sensitivity(pipe, latents, model_fn, args.prompt, guidance_scale, args.steps, bar)

    result = {"guidance_scale": guidance_scale, "methods": {}}
    for method, method_runs in runs.items():
        timed = method_runs[1:]
        result["methods"][method] = {
            "steps": args.steps if method == DSI else ddim_steps_for_same_budget(args.steps),
            "unet_calls": timed[-1]["unet_calls"],
            "seconds_runs": [r["seconds"] for r in timed],
            "seconds_median": statistics.median(r["seconds"] for r in timed),
            "warmup_seconds": method_runs[0]["seconds"],
            "peak_memory_mib_runs": [r["peak_bytes"] / MIB for r in timed],
            "peak_memory_mib": max(r["peak_bytes"] for r in timed) / MIB,
            **accuracy(pipe, timed[-1]["reconstruction"], latents, ceiling),
        }
    result["methods"][DSI_BATCH2] = {
        "steps": args.steps, "sampling_unet_calls": batch2["sampling_unet_calls"],
        "batch_rows_identical": batch2["batch_rows_identical"],
        "first_sampling_call_output_batch2_vs_batch1": batch2["first_sampling_call_output_batch2_vs_batch1"],
        **accuracy(pipe, batch2["reconstruction"], latents, ceiling),
    }
    dsi, ddim = result["methods"][DSI], result["methods"][DDIM]
    result["dsi_over_ddim"] = {
        "time": dsi["seconds_median"] / ddim["seconds_median"],
        "memory": dsi["peak_memory_mib"] / ddim["peak_memory_mib"] if ddim["peak_memory_mib"] > 0 else None,
    }
    return result


# ---------------------------------------------------------------------------------------------- report


def _fmt_psnr(value: float) -> str:
    return "inf (identical)" if value == float("inf") else f"{value:.2f}"


def markdown_table(result: dict) -> str:
    lines = [
        f"Guidance {result['guidance_scale']:g}:",
        "",
        "| method | steps | UNet calls | latent rel. error | bitwise exact | PSNR vs VAE round trip (dB) "
        "| time, median (s) | peak memory (MiB) |",
        "|---|---:|---:|---:|:---:|---:|---:|---:|",
    ]
    for name, m in result["methods"].items():
        if name == DSI_BATCH2:
            calls, seconds, memory = f"{m['sampling_unet_calls']} (sampling, batch 2)", "—", "—"
        else:
            calls, seconds, memory = str(m["unet_calls"]), f"{m['seconds_median']:.3f}", f"{m['peak_memory_mib']:.1f}"
        lines.append(f"| {name} | {m['steps']} | {calls} | {m['latent_relative_error']:.3e} "
                     f"| {'yes' if m['bitwise_exact'] else 'no'} | {_fmt_psnr(m['psnr_vs_vae_round_trip_db'])} "
                     f"| {seconds} | {memory} |")
    first = result["methods"][DSI_BATCH2]["first_sampling_call_output_batch2_vs_batch1"]
    lines += ["", f"Batch-2 row: first sampling call, UNet output in batch 2 vs batch 1 on the same latent: max abs "
                  f"difference {first['max_abs']:.2e}, relative (L2) {first['relative']:.2e}, median "
                  f"{first['median_ulps']:.0f} ulp; {100 * first['fraction_of_elements_differing']:.1f}% of "
                  "elements differ"]
    ratio = result["dsi_over_ddim"]
    memory_ratio = "n/a" if ratio["memory"] is None else f"{ratio['memory']:.2f}"
    lines += ["", f"DSI/DDIM: time {ratio['time']:.2f}×, peak memory {memory_ratio}×"]
    return "\n".join(lines)


def report_header(report: dict) -> str:
    env, setup = report["environment"], report["setup"]
    return "\n".join([
        f"Command: `{report['command']}`",
        f"Machine: {env['device_name']}, {env['cpu_count']} CPUs ({env['torch_threads']} torch threads), "
        f"device {env['device']}; torch {env['torch']}, diffusers {env['diffusers']}; load average (1 min) "
        f"{env['load_average_1_5_15min_at_start'][0]:.2f} at start, "
        f"{env['load_average_1_5_15min_at_end'][0]:.2f} at end",
        f"Model: {setup['model']}; image {setup['image_size']}, latents {setup['latent_shape']}, "
        f"dtype {setup['dtype']}; prompt \"{setup['prompt']}\"",
        f"VAE round trip PSNR vs input: {setup['vae_round_trip_psnr_vs_input_db']:.2f} dB",
        f"Timing: median of {setup['repeats']} run(s) after 1 warm-up; memory: {setup['memory_method']}",
    ])


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    diffusers.utils.logging.set_verbosity_error()  # DDIMInverseScheduler warns about unused config keys per run
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    load_at_start = os.getloadavg()
    print(f"building the {args.arch} model on {args.device} ({args.dtype})…", file=sys.stderr, flush=True)
    pipe = build_pipeline(args.arch, args.device, dtype)
    image = load_image(args.arch)
    with torch.no_grad():
        pixels = pipe.preprocess_images(image)
        latents = pipe.encode_images(pixels).to(args.device, pipe.unet.dtype)
        ceiling = pipe.decode_latents_to_images(latents, "pt")
        original = pipe.image_processor.postprocess(pixels, output_type="pt")

    # Expected UNet calls, for the progress bar only: DSI 2N-2 to invert and 2N-3 to sample, DDIM 2M; the
    # batch-2 row inverts once more, makes one extra batch-1 call and samples (batch-2 calls not shown).
    dsi_calls, ddim_calls = 4 * args.steps - 5, 2 * ddim_steps_for_same_budget(args.steps)
    per_guidance = (args.repeats + 1) * (dsi_calls + ddim_calls) + (2 * args.steps - 2) + 1 + (2 * args.steps - 3)
    total = len(args.guidance_scales) * per_guidance
    results = []
    with tqdm(total=total, unit="UNet call", file=sys.stderr, dynamic_ncols=True, mininterval=1.0) as bar:
        for guidance_scale in args.guidance_scales:
            results.append(bench_guidance(pipe, latents, ceiling, args, guidance_scale, bar))

    report = {
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "cwd": os.getcwd(),
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": {**environment(args.device), "load_average_1_5_15min_at_start": load_at_start},
        "setup": {
            "arch": args.arch,
            "model": "SD-1.5 architecture, random weights (seed 0)" if args.arch == "sd15"
            else "tiny random model (seed 0), VAE downsampling by 2",
            "image": "bundled sample.png" + (" resized to 512×512 (bicubic)" if args.arch == "sd15" else ""),
            "image_size": "×".join(map(str, pixels.shape[-2:])), "latent_shape": list(latents.shape),
            "dtype": args.dtype, "prompt": args.prompt, "steps": args.steps,
            "ddim_steps": ddim_steps_for_same_budget(args.steps), "repeats": args.repeats,
            "guidance_scales": args.guidance_scales, "memory_method": memory_method(args.device),
            "timing_method": "time.perf_counter around inversion + reconstruction in latent space; 1 warm-up "
                             "run per method, then the median of the timed runs, DSI and DDIM interleaved",
            "vae_round_trip_psnr_vs_input_db": psnr(ceiling, original),
        },
        "results": results,
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"inversion-{args.arch}-N{args.steps}-{args.device}-{args.dtype}.json"
    path.write_text(json.dumps(report, indent=2))

    print(report_header(report))
    for result in results:
        print()
        print(markdown_table(result))
    print(f"\nwrote {path}")
    return report


if __name__ == "__main__":
    main()
