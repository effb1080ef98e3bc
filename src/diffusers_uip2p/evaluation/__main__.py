"""Benchmark runners on the command line.

    python -m diffusers_uip2p.evaluation pie-bench --data PIE-Bench_v1 --model MODEL --output runs/pie
    python -m diffusers_uip2p.evaluation emu-edit --data emu_edit --split test --model MODEL --output runs/emu
    python -m diffusers_uip2p.evaluation magicbrush --data MagicBrush --multi-turn --model MODEL --output runs/mb
    python -m diffusers_uip2p.evaluation reconstruction --data PIE-Bench_v1 --model SD15 --output runs/rec
    python -m diffusers_uip2p.evaluation shapes --output runs/shapes   # the shipped Shapes pipeline
    python -m diffusers_uip2p.evaluation shapes --model shapes:uip2p --output runs/shapes-uip2p

MODEL is a local pipeline folder or a Hub id, loaded with ``from_pretrained``: UIP2P and InstructPix2Pix
checkpoints edit by instruction, text-to-image checkpoints (as AutoEditPipeline) by DSI inversion and the
source/target prompts. Rerunning a command resumes it. On several GPUs (or CPU processes), launch it with
``accelerate launch [--config_file ...] -m diffusers_uip2p.evaluation ...``: each process takes its share.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable
from functools import partial

import torch

from ..distributed import cpu_process_group_needed
from .benchmarks import PIE_MASK_SIZE, EmuEdit, MagicBrush, PieBench, ShapesBenchmark
from .clip_metrics import CLIP_ID, DINO_ID
from .metrics import LPIPS_ID, SPECS, Metrics, load_squeezenet_lpips
from .editors import PIPELINE_KINDS, editor_for, load_pipeline
from .runners import DEFAULT_METRICS, check_inputs, run_benchmark, run_reconstruction

EDIT_METHODS = ("direct", "p2p", "masactrl", "sdedit", "auto")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHAPES_PIPELINE = "shipped Shapes pipeline (diffusers_uip2p/shapes/models/pipeline)"


def build_parser(prog: str = "python -m diffusers_uip2p.evaluation") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {"pie-bench": "PIE-Bench (mapping_file.json + annotation_images/)",
             "emu-edit": "Emu Edit's 🤗 dataset (save_to_disk folder or parquet files)",
             "magicbrush": "MagicBrush's 🤗 dataset, single- or multi-turn",
             "reconstruction": "DSI Table 2: PSNR/SSIM of DDIM inversion, DSI and the VAE upper bound",
             "shapes": "Shapes-world edits judged by the Shapes evaluator"}
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        needs_data = name in ("pie-bench", "emu-edit", "magicbrush")
        sub.add_argument("--data", required=needs_data,
                         help="the benchmark's local folder" + ("" if needs_data else "; for Shapes, a split name "
                                                                "(default: test)"))
        sub.add_argument("--model", required=needs_data, help="pipeline folder, Hub id, or a shipped Shapes model "
                         "(shapes:pipeline, shapes:uip2p, shapes:ip2p)"
                         + ("" if needs_data else "; default: the shipped Shapes pipeline"))
        sub.add_argument("--output", required=True, help="run folder: results, per-item records; rerun to resume")
        sub.add_argument("--pipeline", choices=PIPELINE_KINDS, help="how to load --model (default: its "
                         "model_index.json's class; text-to-image checkpoints load as auto-edit)")
        sub.add_argument("--dtype", choices=DTYPES, default="float32")
        sub.add_argument("--limit", type=int, help="only the first N items" + (" (Shapes: default 50)"
                                                                              if name == "shapes" else ""))
        if name in ("emu-edit", "magicbrush", "reconstruction"):
            sub.add_argument("--split", help="the split to read when the dataset holds several")
        if name in ("pie-bench", "reconstruction"):
            sub.add_argument("--mask-size", type=int, default=PIE_MASK_SIZE, help="PIE-Bench's mask and image side")
        if name == "magicbrush":
            sub.add_argument("--multi-turn", action="store_true",
                             help="chain each session's turns (default: every turn from its ground-truth input)")
        if name == "reconstruction":
            sub.add_argument("--benchmark", choices=("pie-bench", "emu-edit", "shapes"), default="pie-bench",
                             help="whose images and source prompts to reconstruct")
            sub.add_argument("--steps", type=int, default=50, help="DSI steps N; DDIM gets 2N − 2")
            sub.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 4.0, 7.5])
        else:
            _editing_arguments(sub, name)
    return parser


def _editing_arguments(sub: argparse.ArgumentParser, name: str) -> None:
    default = DEFAULT_METRICS.get(name, [])
    sub.add_argument("--metrics", nargs="+", default=default or None,
                     help=f"metric names (default: {' '.join(default) or 'none, the Shapes evaluator only'}); "
                          f"known: {' '.join(SPECS)}")
    sub.add_argument("--seed", type=int, default=0, help="seed of every edit")
    sub.add_argument("--steps", type=int, help="inference steps (default: the editor's: 100 for "
                     "instruction-based pipelines, 50 for AutoEditPipeline)")
    sub.add_argument("--guidance-scale", type=float, help="text guidance (default 7.5)")
    sub.add_argument("--image-guidance-scale", type=float, help="image guidance of instruction-based pipelines "
                     "(default 1.5)")
    sub.add_argument("--edit-method", choices=EDIT_METHODS, help="AutoEditPipeline's edit method (default auto)")
    sub.add_argument("--save-images", action="store_true", help="also write every edited image to OUTPUT/images")
    sub.add_argument("--clip-model", default=CLIP_ID, help=f"CLIP of the CLIP metrics (default {CLIP_ID})")
    sub.add_argument("--dino-model", default=DINO_ID,
                     help=f"ViT of DINO similarity and structure distance (default {DINO_ID})")
    sub.add_argument("--lpips-weights", help="LPIPS-SqueezeNet safetensors file (see "
                     "diffusers_uip2p.evaluation.lpips.load_squeezenet_lpips); needed by lpips metrics")


def load_metrics(names: list[str], args: argparse.Namespace, device: torch.device) -> Metrics:
    """``Metrics`` with only the backbones the named metrics need, loaded with ``from_pretrained``."""
    needed = {SPECS[n].model for n in names if n in SPECS} - {None}
    kwargs = {"clip_id": args.clip_model, "dino_id": args.dino_model, "structure_id": args.dino_model}
    if "clip" in needed:
        from transformers import CLIPModel, CLIPProcessor

        kwargs["clip"] = (CLIPModel.from_pretrained(args.clip_model, use_safetensors=True).to(device).eval(),
                          CLIPProcessor.from_pretrained(args.clip_model))
    if needed & {"dino", "structure_model"}:
        from transformers import AutoImageProcessor, AutoModel

        dino = AutoModel.from_pretrained(args.dino_model, use_safetensors=True).to(device).eval()
        kwargs["dino"], kwargs["structure_model"] = (dino, AutoImageProcessor.from_pretrained(args.dino_model)), dino
    if "lpips_network" in needed:
        if args.lpips_weights is None:
            raise ValueError("the lpips metrics need --lpips-weights, an LPIPS-SqueezeNet safetensors file (see "
                             "diffusers_uip2p.evaluation.lpips.load_squeezenet_lpips to write one), or leave them out "
                             "with --metrics.")
        kwargs["lpips_network"] = load_squeezenet_lpips(args.lpips_weights)  # on the CPU, with the pixel metrics
        kwargs["lpips_id"] = f"{LPIPS_ID}, weights {os.path.abspath(args.lpips_weights)}"
    return Metrics(names, **kwargs)


def open_benchmark(name: str, args: argparse.Namespace):
    """The reader of benchmark ``name`` on ``--data``."""
    if name != "shapes" and args.data is None:
        raise ValueError(f"--data (the {name} folder) is required.")
    if name == "pie-bench":
        return PieBench(args.data, mask_size=args.mask_size)
    if name == "emu-edit":
        return EmuEdit(args.data, split=args.split)
    if name == "magicbrush":
        return MagicBrush(args.data, split=args.split, multi_turn=args.multi_turn)
    return ShapesBenchmark(args.data or "test", args.limit or 50)


def distributed_state():
    """Accelerate's view of this process (rank, world size, device, barrier)."""
    from accelerate import PartialState

    return PartialState(cpu=cpu_process_group_needed())


def _pipeline(args: argparse.Namespace, device: torch.device):
    dtype = DTYPES[args.dtype]
    if args.model is None:
        from ..shapes.pretrained import load_shapes_pipeline

        return load_shapes_pipeline(dtype=dtype).to(device), SHAPES_PIPELINE
    from ..shapes.pretrained import resolve_model

    return load_pipeline(resolve_model(args.model), args.pipeline, dtype).to(device), args.model


def prepare(args: argparse.Namespace, state) -> Callable[[], dict | None]:
    """Open the data, the metrics and the model (everything a user can get wrong fails here, before any
    editing); return the run to start."""
    shard = {"rank": state.process_index, "world_size": state.num_processes, "barrier": state.wait_for_everyone,
             "command": "python -m diffusers_uip2p.evaluation " + shlex.join(args.argv)}
    if args.command == "reconstruction":
        benchmark = open_benchmark(args.benchmark, args)
        pipe, model_id = _pipeline(args, state.device)
        return partial(run_reconstruction, benchmark, pipe, args.output, model_id=model_id,
                       num_inference_steps=args.steps, guidance_scales=tuple(args.guidance_scales), limit=args.limit,
                       **shard)
    metrics = load_metrics(args.metrics, args, state.device) if args.metrics else None
    benchmark = open_benchmark(args.command, args)
    if metrics is not None:
        check_inputs(benchmark, metrics)
    pipe, model_id = _pipeline(args, state.device)
    editor = editor_for(pipe, model_id, seed=args.seed, edit_method=args.edit_method,
                        image_guidance_scale=args.image_guidance_scale, num_inference_steps=args.steps,
                        guidance_scale=args.guidance_scale)
    return partial(run_benchmark, benchmark, editor, metrics, args.output, limit=args.limit,
                   save_images=args.save_images, **shard)


def main(argv: list[str] | None = None, prog: str = "python -m diffusers_uip2p.evaluation") -> dict | None:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else argv
    state = distributed_state()
    try:
        run = prepare(args, state)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    result = run()
    if result is not None:
        print(result["table"])
        print(f"wrote {os.path.join(args.output, 'results.json')} and results.md")
    return result


if __name__ == "__main__":
    main()
