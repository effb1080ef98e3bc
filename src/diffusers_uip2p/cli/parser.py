"""``diffusers-uip2p`` (also ``python -m diffusers_uip2p``): edit, auto-edit, reconstruct, train, evaluate,
convert, and the same editing in a web page (app).

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

# Nothing heavy at import: `--help` and argument errors must not wait for torch (the commands import it).

FORWARDED = {
    "train": ("diffusers_uip2p.training.train_uip2p", "train an InstructPix2Pix-architecture model with ERC "
              "(UIP2P) or supervised; `train --help` lists train_uip2p's options"),
    "evaluate": ("diffusers_uip2p.evaluation", "run a benchmark (shapes, pie-bench, emu-edit, magicbrush, "
                 "reconstruction); `evaluate --help` lists them"),
}
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
