"""``diffusers-uip2p`` (also ``python -m diffusers_uip2p``): edit, auto-edit, reconstruct, train, evaluate and
convert from the command line.

Without ``--model`` every command uses the Shapes-world models that ship inside the package (no download),
and IMAGE may name a shipped sample scene (three-objects, tilted-square, striped, outlined-checkered):

    diffusers-uip2p edit three-objects "make the red triangle blue" --reverse "make the blue triangle red"
    diffusers-uip2p auto-edit striped "a large yellow square in the center and a large black hexagon on the right on a striped gray background"
    diffusers-uip2p reconstruct three-objects
    diffusers-uip2p train --output_dir runs/uip2p              # ERC on exported Shapes records
    diffusers-uip2p evaluate shapes --output runs/eval          # see `diffusers-uip2p evaluate --help`
    diffusers-uip2p convert --model my-sd15 --output my-ip2p
    diffusers-uip2p app                                         # the same in a web page, on 127.0.0.1:7860

Each of edit, auto-edit and reconstruct writes its image, a before/after grid and a JSON report to --output
and prints what it chose. Bad input (a missing, unreadable or huge image, words the Shapes models do not
know) ends with a one-line message and exit status 2.
"""

from __future__ import annotations

import argparse
import math
import sys

from .. import strict_json

# Nothing heavy at import: `--help` and argument errors must not wait for torch (the commands import it).

FORWARDED = {
    "train": ("diffusers_uip2p.training.train_uip2p", "train an InstructPix2Pix-architecture model with ERC "
              "(UIP2P) or supervised; `train --help` lists train_uip2p's options"),
    "evaluate": ("diffusers_uip2p.evaluation", "run a benchmark (shapes, pie-bench, emu-edit, magicbrush, "
                 "reconstruction); `evaluate --help` lists them"),
}
SHAPES_TRAIN_RECORDS = 2000
SHIPPED_MODELS = ("uip2p", "ip2p", "pipeline", "clip")  # shapes.pretrained.MODEL_NAMES, without importing it


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def guidance(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _common(sub: argparse.ArgumentParser, output: str, model_help: str, steps: int, guidance_scale: float) -> None:
    sub.add_argument("--model", help=f"local diffusers folder, Hub id or shapes:NAME with NAME one of "
                                     f"{', '.join(SHIPPED_MODELS)} (default: {model_help})")
    sub.add_argument("--output", default=output, help=f"folder for the image, grid and report (default {output})")
    sub.add_argument("--steps", type=positive_int, default=steps, help=f"inference steps (default {steps})")
    sub.add_argument("--guidance-scale", type=guidance, default=guidance_scale,
                     help=f"text guidance (default {guidance_scale})")
    sub.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub.add_argument("--size", type=int, help="longer side the image is resized to (default: the model's own)")
    sub.add_argument("--scale", type=int, default=4, help="enlargement of the saved grid (default 4)")


def build_parser() -> argparse.ArgumentParser:
    description, _, epilog = __doc__.replace("``", "").partition("\n\n")
    parser = argparse.ArgumentParser(prog="diffusers-uip2p", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    edit = sub.add_parser("edit", help="edit an image by instruction (UIP2PPipeline)")
    edit.add_argument("image", metavar="IMAGE", help="image file, or a shipped sample scene's name")
    edit.add_argument("instruction", help='e.g. "make the red triangle blue"')
    edit.add_argument("--reverse", help="the instruction that undoes it: also run the reverse edit and score "
                                        "reversibility")
    edit.add_argument("--candidates", type=positive_int, default=1,
                      help="k seeds ranked by reversibility (needs --reverse)")
    edit.add_argument("--image-guidance-scale", type=guidance, default=1.5,
                      help="how closely the edit keeps the input image (default 1.5)")
    edit.add_argument("--seed", type=int, default=0, help="seed of the first candidate; candidate k uses seed + k "
                                                          "(default 0)")
    edit.add_argument("--attention", action="store_true", help="also save the instruction's per-token "
                                                               "cross-attention maps (edit-attention.png)")
    _common(edit, "outputs/edit", "the shipped Shapes UIP2P model", 50, 7.5)

    auto = sub.add_parser("auto-edit", help="invert exactly (DSI) and edit towards a target prompt")
    auto.add_argument("image", metavar="IMAGE", help="image file, or a shipped sample scene's name")
    auto.add_argument("target_prompt", help="the caption the edited image should have")
    auto.add_argument("--source-prompt", help="the image's caption (default: a shipped sample's own caption)")
    auto.add_argument("--method", choices=("auto", "p2p", "masactrl", "sdedit", "direct"), default="auto",
                      help="edit method (default auto: the task classifier chooses)")
    auto.add_argument("--target-rule", choices=("anchored", "midpoint", "ddim", "coupled"), default=None,
                      help="how the edited branch moves on the dual schedule (default: the library's, chosen on the "
                           "Shapes validation split; coupled is the DSI paper's rule)")
    auto.add_argument("--attention", action="store_true", help="also save the target prompt's per-token "
                                                               "cross-attention maps (auto-edit-attention.png)")
    _common(auto, "outputs/auto-edit", "the shipped Shapes text-to-image pipeline", 50, 7.5)

    rec = sub.add_parser("reconstruct", help="exact inversion and reconstruction, against DDIM inversion")
    rec.add_argument("image", metavar="IMAGE", nargs="?", default="three-objects",
                     help="image file or shipped sample scene (default three-objects)")
    rec.add_argument("--prompt", help="the image's caption (default: a shipped sample's own caption)")
    _common(rec, "outputs/reconstruct", "the shipped Shapes text-to-image pipeline", 50, 7.5)

    for name, (_, text) in FORWARDED.items():
        sub.add_parser(name, help=text, add_help=False)

    app = sub.add_parser("app", help="the editing app in a web page: instruction edit and inversion edit "
                                     "(needs Gradio: pip install 'diffusers-uip2p[app]')")
    app.add_argument("--model", help="instruction-edit tab: UIP2P/InstructPix2Pix folder, Hub id or shapes:NAME "
                                     "(default: the shipped Shapes UIP2P model)")
    app.add_argument("--inversion-model", help="inversion-edit tab: text-to-image folder, Hub id or shapes:NAME "
                                               "(default: the shipped Shapes text-to-image pipeline)")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                                                         "machine only)")
    app.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    app.add_argument("--share", choices=("off", "on"), default="off",
                     help="on: also a public Gradio share link (needs the network; default off)")

    conv = sub.add_parser("convert", help="text-to-image folder -> InstructPix2Pix/UIP2P folder (8-channel UNet)")
    conv.add_argument("--model", required=True, help="local diffusers Stable Diffusion folder (4-channel UNet)")
    conv.add_argument("--output", required=True, help="folder to write (safetensors)")
    conv.add_argument("--keep-scheduler", action="store_true", help="keep the source scheduler (default: Euler ancestral)")
    conv.add_argument("--record-uip2p", action="store_true",
                      help="record UIP2PPipeline in model_index.json (default: the IP2P class, which "
                           "DiffusionPipeline.from_pretrained resolves)")
    return parser


def _with_shapes_defaults(argv: list[str]) -> list[str]:
    """train_uip2p's arguments, with the shipped Shapes pipeline, CLIP and resolution when no model is
    given, exported Shapes training records when no data is given either, and health checks on Shapes
    validation edits."""
    def given(option: str) -> bool:
        return any(a.startswith(option) for a in argv)

    if "-h" in argv or "--help" in argv or given("--pretrained_model_name_or_path"):
        return argv
    from ..shapes.pretrained import shapes_model_path

    extra = ["--pretrained_model_name_or_path", str(shapes_model_path("pipeline"))]
    if not given("--clip_model_name_or_path"):
        extra += ["--clip_model_name_or_path", str(shapes_model_path("clip"))]
    if not given("--resolution"):
        extra += ["--resolution", "64"]
    if not given("--train_data"):
        from ..training.train_uip2p import parse_args

        parse_args(extra + argv + ["--train_data", "(exported Shapes records)"])  # refuse bad options before exporting
        extra += ["--train_data", _export_shapes_records(argv)]
    if not given("--health_data"):
        extra += ["--health_data", "shapes"]
    return extra + argv


def _export_shapes_records(argv: list[str]) -> str:
    """Export Shapes train-split records into the run's --output_dir once; return the folder."""
    from pathlib import Path

    from ..shapes.dataset import export_jsonl, split_edits

    finder = argparse.ArgumentParser(add_help=False)
    finder.add_argument("--output_dir", default="outputs/train")
    output = Path(finder.parse_known_args(argv)[0].output_dir)
    data = output / "shapes-train-records"
    if not (data / "records.jsonl").is_file():
        print(f"exporting {SHAPES_TRAIN_RECORDS} Shapes training records to {data}", file=sys.stderr)
        export_jsonl(split_edits("train", SHAPES_TRAIN_RECORDS), data)
    return str(data)


def _forward(command: str, argv: list[str]) -> int:
    import importlib

    module = importlib.import_module(FORWARDED[command][0] + (".__main__" if command == "evaluate" else ""))
    prog = f"diffusers-uip2p {command}"
    if command == "train":
        result = module.main(_with_shapes_defaults(argv), prog=prog, shapes_defaults=True)
    else:
        result = module.main(argv, prog=prog)
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in FORWARDED:
        return _forward(argv[0], argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "app":
        from ..app import launch

        try:
            launch(args.model, args.inversion_model, host=args.host, port=args.port, share=args.share == "on")
        except ImportError as error:
            print(f"diffusers-uip2p app: error: {error}", file=sys.stderr)
            return 2
        return 0
    import PIL

    from . import commands

    run = {"edit": commands.edit, "auto-edit": commands.auto_edit, "reconstruct": commands.reconstruct,
           "convert": commands.convert}[args.command]
    try:
        report = run(args)
    except Exception as error:  # one line and exit 2; the traceback only with --debug
        if getattr(args, "debug", False):
            raise
        expected = isinstance(error, (ValueError, TypeError, OSError, PIL.UnidentifiedImageError))
        hint = "" if expected else f" ({type(error).__name__}; run with --debug for the traceback)"
        print(f"diffusers-uip2p {args.command}: error: {error}{hint}", file=sys.stderr)
        return 2
    print(summary(report))
    return 0


def _rounded(value):
    """Scores to 4 decimals for reading (the JSON report keeps every digit)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    return value


def summary(report: dict) -> str:
    """What a person reads after a run: the choices and scores, then the files written."""
    if report["command"] == "reconstruct":
        lines = [f"model: {report['model']}; {report['num_inference_steps']} steps, guidance "
                 f"{report['guidance_scale']}; prompt: {report['prompt']}",
                 f"{'method':<6} {'UNet calls':>10} {'latent rel. error':>18} {'PSNR vs VAE round trip':>24}"]
        lines += [f"{name.upper():<6} {r['unet_calls']:>10} {r['latent_relative_error']:>18.3e} "
                  f"{r['psnr_vs_vae_round_trip_db']:>21.2f} dB" for name, r in
                  ((n, report[n]) for n in ("dsi", "ddim"))]
        lines.append("grid: input | VAE round trip | DSI | DDIM")
    else:
        lines = [f"{key}: {strict_json.dumps(_rounded(value)) if isinstance(value, (dict, list)) else value}"
                 for key, value in report.items() if value is not None and key not in ("command", "files")]
        if report["command"] == "edit":
            lines.append("grid: input | edit" + (" | reverse edit" if report.get("reverse") else ""))
        elif report["command"] == "auto-edit":
            lines.append("grid: input | exact reconstruction | edit")
    return "\n".join(lines + [f"wrote {path}" for path in report.get("files", [])])
