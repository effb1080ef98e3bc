"""The papers' tables on the Shapes world, reproducible on a laptop CPU with the shipped models.

Sections (each writes its runs under ``--runs``; rerunning resumes, and ``--sections`` picks some):

* ``reconstruction``: DSI Table 2. PSNR/SSIM of DDIM inversion (2N − 2 steps), Dual-Schedule Inversion
  (N steps, the same UNet calls) and the VAE round trip (the ceiling), on test scenes and their captions.
* ``editing``: DSI Tables 3 and 5. Each editing method on DSI (each target-branch rule), DDIM inversion,
  Direct Inversion and null-text inversion, and ``auto``, with intervals: read from
  `benchmarks/shapes_editing.py`'s result (run it and `shapes_editing_runs.py` first).
* ``uip2p``: UIP2P Table 3 and its loss ablation. The untrained base (the text-to-image UNet widened to
  8 channels), supervised InstructPix2Pix, UIP2P trained with ERC only, and the ablation steps given with
  ``--ablation``, all editing the same test edits with the same seed. Scored by the Shapes evaluator and
  the Shapes CLIP (CLIP-I, CLIP-T, CLIP_dir), per edit category.
* Elo (part of ``uip2p``): every pair of those models on every test edit, judged by the Shapes evaluator:
  a success beats a failure; between two successes or two failures, the output with more of (the asked
  change, the rest preserved) right wins; otherwise a draw. Ratings with 95 % intervals over 1000 orders.
* A figure (part of ``uip2p``): one test edit per category, input | true edit | each model's output.

The Markdown goes into ``benchmarks/RESULTS.md`` and the README between ``<!-- shapes-tables -->`` markers.

    .venv/bin/python benchmarks/shapes_tables.py --threads 1 \\
        --ablation "L_CLIP + L_recon=work/ablation-clip-recon" "+ L_sim=work/ablation-clip-recon-sim"

``--from-runs`` redraws the ``uip2p`` section (text and pictures) from the tracked runs without a model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import torch

from diffusers_uip2p.evaluation import ShapesBenchmark, run_reconstruction, run_shapes
from diffusers_uip2p.evaluation.editors import InstructionEditor, weights_fingerprint
from diffusers_uip2p.evaluation.elo import elo_confidence, leaderboard_markdown, plot_elo
from diffusers_uip2p.evaluation.metrics import Metrics
from diffusers_uip2p.evaluation.runners import finished_records
from diffusers_uip2p.shapes import CATEGORIES, render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.pretrained import load_shapes_clip, load_shapes_pipeline, shapes_model_path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shapes_editing  # noqa: E402

SECTIONS = ("reconstruction", "editing", "uip2p")
SHIPPED_EDITORS = {"Base (T2I UNet widened, untrained)": None, "InstructPix2Pix (supervised)": "ip2p",
                   "UIP2P (ERC only)": "uip2p"}
CLIP_METRICS = ["clip_i", "clip_t", "clip_dir"]
MARKERS = ("<!-- shapes-tables:start -->", "<!-- shapes-tables:end -->")


def reconstruction_section(args) -> str:
    pipe = load_shapes_pipeline()
    result = run_reconstruction(ShapesBenchmark("test", args.num_reconstruction), pipe, Path(args.runs) / "reconstruction",
                                model_id="shipped Shapes pipeline", num_inference_steps=args.dsi_steps,
                                guidance_scales=(1.0, 7.5), command=args.command)
    return (f"### DSI Table 2: reconstruction ({result['items']} test scenes, N = {args.dsi_steps}, "
            f"guidance 1 and 7.5)\n\n{result['table']}")


def editing_section(args) -> str:
    """From `shapes_editing.py`'s result (its per-edit runs take hours on a CPU; they resume)."""
    output = ROOT / "benchmarks" / "results" / "shapes-editing.json"
    if not output.is_file():
        raise SystemExit(f"{output} is missing: run benchmarks/shapes_editing_runs.py on the validation and test "
                         "splits, then benchmarks/shapes_editing.py.")
    result = json.loads(output.read_text())
    if result.get("weights") != weights_fingerprint(load_shapes_pipeline()):
        raise ValueError(f"{output} was not measured with the shipped Shapes pipeline's weights; measure again.")
    chosen = result["chosen_on_validation"]
    default = f"dsi-{chosen['target_rule']}"
    methods = ("direct", "p2p", "masactrl", "sdedit", "auto-validation")
    return (f"### DSI Tables 3 and 5: editing methods on each inversion, and `auto` ({result['num_test_edits']} test "
            f"edits, {result['steps']} DSI steps, DDIM {result['ddim_steps']}, guidance {result['guidance_scale']:g})\n\n"
            f"Chosen on {result['num_validation_edits']} validation edits: target rule `{chosen['target_rule']}`, "
            f"routing {chosen['task_methods']}. The router's task was right for {result['routing_accuracy']:.2f} of "
            f"the test edits.\n\n{shapes_editing.markdown(result['summary'], result['comparisons'])}\n\n"
            f"Success per category:\n\n"
            f"{shapes_editing.category_markdown(result['summary'], [f'{default}/{m}' for m in methods] + [f'ddim/{m}' for m in methods])}"
            "\n\n![sync gap per step](../docs/images/shapes-sync-gap.png)")


def _editor_folders(args, scratch: Path) -> dict[str, Path]:
    """Label → UIP2P-format folder; the base is converted from the shipped text-to-image pipeline."""
    from diffusers_uip2p.pipelines import UIP2PPipeline, convert_pipeline_folder

    folders = {}
    for label, name in SHIPPED_EDITORS.items():
        if args.editors is not None and (name or "base") not in args.editors:
            continue
        if name is None:
            folders[label] = scratch / "base"
            convert_pipeline_folder(shapes_model_path("pipeline"), folders[label], pipeline_class=UIP2PPipeline)
        else:
            folders[label] = shapes_model_path(name)
    for entry in args.ablation:
        label, folder = entry.split("=", 1)
        folders[f"ablation: {label}"] = Path(folder)
    return folders


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def _rows(folder: Path) -> dict[str, dict]:
    """key → the evaluator's row, from a finished run folder."""
    return {record["key"]: record["rows"][0] for record in finished_records(folder).values()}


def judged_winner(a: dict, b: dict) -> str:
    """"a", "b" or "draw" by the Shapes evaluator (see the module docstring)."""
    score_a, score_b = (a["success"], a["edit_applied"] + a["preserved"]), (b["success"], b["edit_applied"] + b["preserved"])
    return "a" if score_a > score_b else "b" if score_b > score_a else "draw"


def uip2p_table(results: dict[str, dict]) -> str:
    columns = [("success", "Success"), ("edit_applied", "Edit applied"), ("preserved", "Preserved"),
               ("psnr_outside", "PSNR outside (dB)"), ("clip_i", "CLIP-I"), ("clip_t", "CLIP-T"),
               ("clip_dir", "CLIP_dir")]
    lines = ["| model | category | n | " + " | ".join(name for _, name in columns) + " |",
             "|---|---|---:|" + "---:|" * len(columns)]
    for category in ["all", *CATEGORIES]:
        for label, result in results.items():
            row = result["summary"].get(category)
            if row is None:
                continue
            cells = " | ".join(f"{row[key]:.3f}" if key.startswith("clip") else f"{row[key]:.2f}" for key, _ in columns)
            lines.append(f"| {label} | {category} | {row['count']} | {cells} |")
    return "\n".join(lines)


def figure(folders: dict[str, Path], edits, keys: list[str], path: Path, scale: int = 2) -> None:
    """One test edit per category: input | true edit | each model's output."""
    chosen = {}
    for key, edit in zip(keys, edits, strict=True):
        chosen.setdefault(edit.category, (key, edit))
    rows = [chosen[category] for category in CATEGORIES if category in chosen]
    size, header, width = 64 * scale, 28, max(64 * scale, 150)
    columns = ["input", "true edit", *folders]
    grid = PIL.Image.new("RGB", (len(columns) * (width + 4), header + len(rows) * (size + 16)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for c, name in enumerate(columns):
        for i, part in enumerate((name[:24], name[24:48])):
            draw.text((c * (width + 4) + 2, 1 + 12 * i), part, fill="black")
    for r, (key, edit) in enumerate(rows):
        y = header + r * (size + 16)
        draw.text((2, y), edit.instruction[:70], fill="black")
        images = [render(edit.source), render(edit.target)]
        images += [PIL.Image.open(folder / "images" / f"{key}.png") for folder in folders.values()]
        for c, image in enumerate(images):
            grid.paste(image.resize((size, size), PIL.Image.NEAREST), (c * (width + 4), y + 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def measure_editors(args) -> tuple[dict[str, dict], dict[str, Path]]:
    """Run (or resume) every editor on the test edits; label → result and label → run folder."""
    clip, tokenizer, image_processor = load_shapes_clip()
    from transformers import CLIPProcessor

    metrics = Metrics(CLIP_METRICS, clip=(clip, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)),
                      clip_id="shipped Shapes CLIP")
    from diffusers_uip2p.cli.commands import load_edit_pipeline

    results, runs = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, folder in _editor_folders(args, Path(scratch)).items():
            pipe = load_edit_pipeline(str(folder))  # as `diffusers-uip2p edit --model FOLDER` loads it
            editor = InstructionEditor(pipe, model_id=label, seed=0, num_inference_steps=args.edit_steps)
            runs[label] = Path(args.runs) / "uip2p" / _slug(label)
            results[label] = run_shapes(editor, runs[label], num_edits=args.num_edits, metrics=metrics,
                                        save_images=True, command=args.command)
    return results, runs


def tracked_editor_runs(args) -> tuple[dict[str, dict], dict[str, Path]]:
    """The finished runs under ``--runs``, in table order (shipped editors, then ablations by name): the
    ablation models are training outputs that are not shipped, so the docs are redrawn from their records."""
    found = {}
    for path in sorted((Path(args.runs) / "uip2p").glob("*/results.json")):
        result = json.loads(path.read_text())
        found[result["editor"]["model"]] = (result, path.parent)
    if not found:
        raise SystemExit(f"no finished runs under {Path(args.runs) / 'uip2p'}: measure them first (without --from-runs)")
    order = [label for label in SHIPPED_EDITORS if label in found] + sorted(set(found) - set(SHIPPED_EDITORS))
    return {label: found[label][0] for label in order}, {label: found[label][1] for label in order}


def _shared_setting(results: dict[str, dict], what: str, read):
    """The one value of a setting every run used: a table of runs made differently would mislead."""
    values = {read(result) for result in results.values()}
    if len(values) != 1:
        raise ValueError(f"the runs differ in their {what}: {sorted(values)}")
    return values.pop()


def uip2p_section(args) -> str:
    results, runs = tracked_editor_runs(args) if args.from_runs else measure_editors(args)
    num_edits = _shared_setting(results, "number of test edits", lambda result: result["items"])
    steps = _shared_setting(results, "number of steps", lambda result: result["editor"]["num_inference_steps"])
    rows = {label: _rows(folder) for label, folder in runs.items()}
    keys = sorted(next(iter(rows.values())))
    votes = [(a, b, judged_winner(rows[a][key], rows[b][key])) for key in keys
             for a, b in itertools.combinations(rows, 2)]
    elo = elo_confidence(votes)
    plot_elo(elo, Path(args.pictures) / "shapes-elo.png", title="Shapes world: Elo from evaluator-judged pairs")
    figure(runs, split_edits("test", num_edits), ShapesBenchmark("test", num_edits).keys,
           Path(args.pictures) / "shapes-uip2p.png")
    seconds = {label: result["seconds_per_item"] for label, result in results.items()}
    measured = {result["command"] for result in results.values()}
    provenance = ("" if not args.from_runs else
                  "Measured by " + ", ".join(f"`{command}`" for command in sorted(measured))
                  + "; the text and pictures are redrawn from the tracked runs.\n\n")
    return (f"### UIP2P Table 3 and the loss ablation ({num_edits} test edits, {steps} steps, "
            f"text guidance 7.5, image guidance 1.5, seed 0)\n\n{uip2p_table(results)}\n\n"
            f"Seconds per edit (CPU, including scoring): "
            + ", ".join(f"{label} {s:.2f}" for label, s in seconds.items())
            + "\n\n![one test edit per category](../docs/images/shapes-uip2p.png)\n\n"
            f"### Elo from evaluator-judged pairs ({len(votes)} comparisons)\n\n{leaderboard_markdown(elo)}\n\n"
            f"![Elo](../docs/images/shapes-elo.png)\n\n{provenance}").rstrip("\n")


def replace_between_markers(path: Path, text: str) -> None:
    content = path.read_text()
    block = f"{MARKERS[0]}\n{text}\n{MARKERS[1]}"
    if MARKERS[0] in content:
        start, end = content.index(MARKERS[0]), content.index(MARKERS[1]) + len(MARKERS[1])
        content = content[:start] + block + content[end:]
    else:
        content = content.rstrip("\n") + "\n\n## Results on the Shapes world\n\n" + block + "\n"
    path.write_text(content)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--num-reconstruction", type=int, default=24)
    parser.add_argument("--dsi-steps", type=int, default=50)
    parser.add_argument("--num-edits", type=int, default=50, help="test edits of the UIP2P table and Elo")
    parser.add_argument("--edit-steps", type=int, default=50)
    parser.add_argument("--ablation", nargs="*", default=[], metavar="LABEL=FOLDER",
                        help="ablation models (UIP2P folders) to add to the UIP2P table and the Elo")
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "results" / "shapes-tables"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--editors", nargs="+", choices=("base", "ip2p", "uip2p"), default=None,
                        help="uip2p: measure only these shipped editors (default all); the others' runs are read "
                             "with --from-runs")
    parser.add_argument("--from-runs", action="store_true",
                        help="uip2p: redraw the table, Elo and figure from the finished runs under --runs, "
                             "running no model (the ablation models are not shipped)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the Markdown only (pictures go to --runs instead of docs/images)")
    args = parser.parse_args(argv)
    args.command = shlex.join([Path(sys.executable).name, *(sys.argv if argv is None else
                                                            ["benchmarks/shapes_tables.py", *argv])])
    args.pictures = args.runs if args.no_write else str(ROOT / "docs" / "images")
    if args.threads:
        torch.set_num_threads(args.threads)
    builders = {"reconstruction": reconstruction_section, "editing": editing_section, "uip2p": uip2p_section}
    parts = {name: f"{builders[name](args)}\n\nProduced by `{args.command}`." for name in args.sections}
    cache = Path(args.runs) / "sections.json"
    cached = json.loads(cache.read_text()) if cache.is_file() else {}
    cached.update(parts)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(cached, indent=2) + "\n")
    text = "\n\n".join(cached[name] for name in SECTIONS if name in cached)
    print(text)
    if not args.no_write:
        replace_between_markers(ROOT / "benchmarks" / "RESULTS.md", text)
    return text


if __name__ == "__main__":
    main()
