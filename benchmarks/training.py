"""Benchmark: one UIP2P training step with the Edit Reversibility Constraint (`erc_step`) against the supervised
InstructPix2Pix step (`supervised_step`), at the same batch, resolution, models and seed.

Every row is a whole training step as a training loop runs it: the step's loss (forward), ``loss.backward()``,
``AdamW.step()`` and ``zero_grad()`` (gradients set to None, diffusers' default), with the UNet in train mode
and only the UNet trainable (VAE, text encoder and loss CLIP frozen):

* ``supervised (IP2P)``: `supervised_step`, the loss diffusers' ``train_instruct_pix2pix.py`` computes per
  step (noise the true edited image's latents, one UNet forward, MSE on the noise); the baseline (×1.00);
* ``ERC, no L_attn``: `erc_step` with ``ERCLossWeights(attn=0)``: no attention capture, the UNet keeps its
  fused attention kernel;
* ``ERC``: the full `erc_step`: cross-attention maps captured with gradients (explicit softmax) at the
  default resolutions (the two lowest that have cross-attention) in both passes, plus L_attn;
* ``ERC, 2 edit steps``: ``num_edit_steps=2`` (each edit is two DDIM steps, all in the graph);
* ``ERC + gradient checkpointing`` (``--arch sd15``, or ``--checkpointing-row``): the full `erc_step` after
  ``unet.enable_gradient_checkpointing()``, with an `AttentionRecorder` installed around forward and
  backward (the backward pass re-runs the attention layers), to show the time paid for the memory saved.

The UNet, VAE, text-encoder and CLIP image calls of each row are counted with forward hooks during its
warm-up, not assumed: the supervised step makes 1 UNet forward; ERC 2 (4 with 2 edit steps), 2 VAE decodes
and 2 CLIP image passes with gradients, plus one CLIP image pass without. The "attention capture overhead"
is row ``ERC`` over row ``ERC, no L_attn``.

All rows share one UNet and one AdamW, with ``conditioning_dropout_prob=0``, the same timestep range and a
generator seeded alike for every step, so each step draws the same noise and timesteps. The learning rate is
0 by default (``--lr``): AdamW then does all its arithmetic but leaves the weights as they were, so every row
and every run sees the same weights. The AdamW state is created by the first warm-up step and belongs to the
baseline of every measured step.

Time: ``time.perf_counter``, one warm-up per row, then the median of ``--repeats`` runs, rows interleaved.
Memory: peak growth over a baseline taken just before each step, as in `benchmarks/inversion.py` (CUDA:
``torch.cuda.max_memory_allocated``; CPU: RSS sampled every 5 ms, approximate); the largest over the timed
runs. On a CPU also "allocated": the peak growth of the bytes glibc's malloc has in use (``mallinfo2``,
sampled alike), which unlike RSS does not count memory the allocator keeps after a free (`AllocatedPeak`).
The growth includes the UNet's gradients (allocated anew in every step, since ``zero_grad`` frees them; their
size is printed) and the optimizer step's temporaries, so ratios understate the activations' ratio.
``--arch sd15`` uses Stable Diffusion 1.5's InstructPix2Pix architecture and CLIP ViT-L/14 as the loss CLIP,
all with random weights (nothing downloaded; about 15.5 GiB in float32 with gradients and AdamW state).
Random weights make the losses meaningless but not the cost; images are random pixels with a fixed seed.

    .venv/bin/python benchmarks/training.py --arch tiny --threads 1
    .venv/bin/python benchmarks/training.py --arch sd15 --size 256 --batch-size 1 --repeats 1 --threads 1
"""

import argparse
import contextlib
import ctypes
import math
import statistics
import sys
import threading
from pathlib import Path

import torch
from diffusers import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import (  # noqa: E402
    add_run_arguments,
    environment,
    memory_method,
    parse_run_arguments,
    _release_freed_memory,
    save_report,
    timed,
)

from diffusers_uip2p.attention.controller import unet_layers  # noqa: E402
from diffusers_uip2p.testing import (  # noqa: E402
    SD15_SCHEDULER_CONFIG,
    clip_vit_l14_model,
    sd15_components,
    tiny_clip_model,
    tiny_instruct_pix2pix_components,
)
from diffusers_uip2p.training.erc import (  # noqa: E402
    AttentionRecorder,
    EditModels,
    ERCConfig,
    erc_step,
    supervised_step,
)
from diffusers_uip2p.training.losses import CLIPEmbedder, ERCLossWeights  # noqa: E402

# Short texts: the byte-level test tokenizer fits 75 bytes.
CAPTIONS = [("a red circle on a table", "make it blue", "a blue circle on a table", "make it red"),
            ("a dog on a couch", "add a ball", "a dog on a couch with a ball", "remove the ball")]


def build(arch: str, device: str):
    if arch == "sd15":
        components = sd15_components(in_channels=8)
        clip, clip_tokenizer = clip_vit_l14_model()
    else:
        components = tiny_instruct_pix2pix_components()
        clip, clip_tokenizer = tiny_clip_model()
    noise_scheduler = DDPMScheduler.from_config({k: v for k, v in SD15_SCHEDULER_CONFIG.items()
                                                 if k not in ("_class_name", "skip_prk_steps")})
    models = EditModels(components["vae"].requires_grad_(False).to(device),
                        components["text_encoder"].requires_grad_(False).to(device), components["tokenizer"],
                        noise_scheduler, CLIPEmbedder(clip, clip_tokenizer).to(device))
    return components["unet"].to(device).train(), models


def make_batch(batch_size: int, size: int, device: str, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    rows = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch_size)]
    pixels = [torch.rand(batch_size, 3, size, size, generator=generator) * 2 - 1 for _ in range(2)]
    return {"pixel_values": pixels[0].to(device), "edited_pixel_values": pixels[1].to(device),
            "input_caption": [r[0] for r in rows], "edit_instruction": [r[1] for r in rows],
            "edited_caption": [r[2] for r in rows], "reverse_instruction": [r[3] for r in rows]}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


class AllocatedPeak:
    """Peak growth of the bytes malloc has handed out and not taken back (glibc ``mallinfo2``: heap chunks in
    use in every arena plus mmapped chunks), sampled every 5 ms like the RSS probe. Unlike RSS it does not
    count memory that the allocator keeps after a free, so it follows the live tensors. ``peak_bytes`` is
    None where glibc ≥ 2.33 is not there."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s, self.peak_bytes = interval_s, None
        try:
            self._mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
            self._mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):
            self._mallinfo2 = None

    def in_use(self) -> int:
        info = self._mallinfo2()
        return info.uordblks + info.hblkhd

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, self.in_use())

    def __enter__(self):
        if self._mallinfo2 is not None:
            self._baseline = self._peak = self.in_use()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._mallinfo2 is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, self.in_use()) - self._baseline
        return False


class CallCounter:
    """Counts forward calls of named modules (top-level calls only: recomputation under gradient
    checkpointing runs submodules, not these)."""

    def __init__(self, modules: dict):
        self.counts = dict.fromkeys(modules, 0)
        self.active = False
        for name, module in modules.items():
            module.register_forward_hook(self._hook(name))

    def _hook(self, name):
        def hook(module, args, output):
            if self.active:
                self.counts[name] += 1
        return hook

    def count(self, run):
        self.counts = dict.fromkeys(self.counts, 0)
        self.active = True
        try:
            result = run()
        finally:
            self.active = False
        return dict(self.counts), result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("tiny", "sd15"), default="tiny")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default: 64 tiny, 256 sd15)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 2 tiny, 1 sd15")
    parser.add_argument("--repeats", type=int, default=None, help="default: 20 tiny, 3 sd15")
    parser.add_argument("--lr", type=float, default=0.0, help="AdamW learning rate (0: weights stay fixed)")
    parser.add_argument("--min-timestep", type=int, default=0)
    parser.add_argument("--max-timestep", type=int, default=999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpointing-row", action="store_true", help="add the gradient checkpointing row "
                        "(always there with --arch sd15)")
    add_run_arguments(parser)
    args = parse_run_arguments(parser, argv)
    size = args.size or (256 if args.arch == "sd15" else 64)
    args.repeats = args.repeats or (3 if args.arch == "sd15" else 20)
    batch_size = args.batch_size or (1 if args.arch == "sd15" else 2)
    unet, models = build(args.arch, args.device)
    batch = make_batch(batch_size, size, args.device, args.seed)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.lr)
    counter = CallCounter({"unet": unet, "vae_encode": models.vae.encoder, "vae_decode": models.vae.decoder,
                           "text_encoder": models.text_encoder, "clip_image": models.clip.model.vision_model,
                           "clip_text": models.clip.model.text_model})

    def config(**kwargs):
        return ERCConfig(min_timestep=args.min_timestep, max_timestep=args.max_timestep,
                         conditioning_dropout_prob=0.0, **kwargs)

    def step(loss_fn, checkpointing=False):
        def run():
            if not checkpointing:
                loss = loss_fn(torch.Generator().manual_seed(args.seed), None)
                loss.backward()
            else:  # the recorder must stay installed through backward, which re-runs the attention layers
                unet.enable_gradient_checkpointing()
                try:
                    with AttentionRecorder(unet) as recorder:
                        loss = loss_fn(torch.Generator().manual_seed(args.seed), recorder)
                        loss.backward()
                finally:
                    unet.disable_gradient_checkpointing()
            optimizer.step()
            optimizer.zero_grad()
            return loss.item()
        return run

    no_attn = config(weights=ERCLossWeights(attn=0))
    rows = {
        "supervised (IP2P)": step(lambda g, _: supervised_step(unet, models, batch, config(), g)),
        "ERC, no L_attn": step(lambda g, _: erc_step(unet, models, batch, no_attn, g).loss),
        "ERC": step(lambda g, _: erc_step(unet, models, batch, config(), g).loss),
        "ERC, 2 edit steps": step(lambda g, _: erc_step(unet, models, batch, config(num_edit_steps=2), g).loss),
    }
    if args.arch == "sd15" or args.checkpointing_row:
        rows["ERC + gradient checkpointing"] = step(
            lambda g, recorder: erc_step(unet, models, batch, config(), g, recorder=recorder).loss, checkpointing=True)
    calls, losses = {}, {}
    for name, run in rows.items():  # warm-up; the first one also creates the AdamW state
        calls[name], losses[name] = counter.count(run)
        print(f"warm-up {name}: loss {losses[name]:.4f}, calls {calls[name]}", flush=True)
    measured = {name: [] for name in rows}
    allocated = {name: [] for name in rows}
    for repeat in range(args.repeats):  # interleaved, so that load changes hit every row alike
        for name, run in rows.items():
            probe = AllocatedPeak() if args.device == "cpu" else None
            _release_freed_memory()  # before the probe's baseline (timed() does it again for the RSS probe)
            with probe or contextlib.nullcontext():
                measured[name].append(timed(args.device, run))
            allocated[name].append(probe.peak_bytes if probe else None)
            print(f"run {repeat + 1}/{args.repeats} {name}: {measured[name][-1][0]:.3f} s, "
                  f"{measured[name][-1][1] / 2**20:.1f} MiB", flush=True)

    base_name = "supervised (IP2P)"
    seconds = {name: statistics.median(m[0] for m in runs) for name, runs in measured.items()}
    peaks = {name: max(m[1] for m in runs) / 2**20 for name, runs in measured.items()}
    has_allocated = all(v is not None for runs in allocated.values() for v in runs)
    allocated_peaks = {name: max(runs) / 2**20 if has_allocated else None for name, runs in allocated.items()}
    results = {}
    for name in rows:
        results[name] = {
            "seconds_median": seconds[name], "seconds_all": [m[0] for m in measured[name]],
            "time_ratio_to_supervised": seconds[name] / seconds[base_name],
            "peak_mib_max": peaks[name], "peak_mib_all": [m[1] / 2**20 for m in measured[name]],
            "memory_ratio_to_supervised": peaks[name] / peaks[base_name],
            "calls": calls[name], "warm_up_loss": losses[name],
            "losses_finite": all(math.isfinite(m[2]) for m in measured[name])}
        if has_allocated:
            results[name].update({
                "allocated_peak_mib_max": allocated_peaks[name],
                "allocated_peak_mib_all": [v / 2**20 for v in allocated[name]],
                "allocated_ratio_to_supervised": allocated_peaks[name] / allocated_peaks[base_name]})
    capture = {"time_ratio": seconds["ERC"] / seconds["ERC, no L_attn"],
               "memory_ratio": peaks["ERC"] / peaks["ERC, no L_attn"]}
    if has_allocated:
        capture["allocated_ratio"] = allocated_peaks["ERC"] / allocated_peaks["ERC, no L_attn"]
    layers = [layer for layer in unet_layers(unet) if layer.is_cross]
    captured_resolutions = sorted({layer.resolution for layer in layers})[:2]
    captured = [layer.name for layer in layers if layer.resolution in captured_resolutions]
    gradient_mib = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2**20
    memory = memory_method(args.device)
    if has_allocated:
        memory += ("; allocated: glibc mallinfo2() bytes in use (heap chunks in all arenas + mmapped chunks) "
                   "sampled every 5 ms, peak minus the value before the run")
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "arch": args.arch, "size": size,
              "batch_size": batch_size, "repeats": args.repeats, "lr": args.lr,
              "timesteps": [args.min_timestep, args.max_timestep], "conditioning_dropout_prob": 0.0,
              "seed": args.seed, "memory": memory, "unet_gradient_mib": gradient_mib,
              "attention_capture": {"layers": captured, "resolutions_at_sample_size": captured_resolutions},
              "attention_capture_overhead": capture, "rows": results, "environment": environment(args.device)}

    print(f"\n{args.arch}, batch {batch_size} at {size}×{size}, {args.device}, {torch.get_num_threads()} thread(s); "
          f"median of {args.repeats} after a warm-up; UNet gradients {gradient_mib:.1f} MiB (in every peak); "
          f"L_attn on {len(captured)} cross-attention layers (resolutions {captured_resolutions} "
          f"at the UNet's sample_size)\n")
    header = "| step | UNet fwd | VAE dec | CLIP img | median s | × supervised | peak MiB (RSS) | × supervised |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if has_allocated:
        header, rule = header + " peak MiB (allocated) | × supervised |", rule + "---:|---:|"
    print(header + "\n" + rule)
    for name, row in results.items():
        c = row["calls"]
        line = (f"| {name} | {c['unet']} | {c['vae_decode']} | {c['clip_image']} | {row['seconds_median']:.3f} | "
                f"{row['time_ratio_to_supervised']:.2f} | {row['peak_mib_max']:.1f} | "
                f"{row['memory_ratio_to_supervised']:.2f} |")
        if has_allocated:
            line += f" {row['allocated_peak_mib_max']:.1f} | {row['allocated_ratio_to_supervised']:.2f} |"
        print(line)
    print(f"\nAttention capture overhead (ERC / ERC, no L_attn): time {capture['time_ratio']:.2f}×, "
          f"peak memory {capture['memory_ratio']:.2f}× (RSS)"
          + (f", {capture['allocated_ratio']:.2f}× (allocated)" if has_allocated else ""))
    save_report(report, args.output, f"training-{args.arch}-{size}px-b{batch_size}-{args.device}.json")
    return report


if __name__ == "__main__":
    main()
