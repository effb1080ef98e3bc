"""``diffusers-uip2p``: the command line (its commands and options are described in `parser`)."""

from __future__ import annotations

import argparse
import sys

from .. import strict_json
from .parser import FORWARDED, SHIPPED_MODELS, build_parser

__all__ = ["SHIPPED_MODELS", "build_parser", "main", "summary"]
SHAPES_TRAIN_RECORDS = 2000


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
