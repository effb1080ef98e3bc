"""UIP2P Table 3, its loss ablation and the evaluator-judged Elo on the Shapes world: the ``uip2p`` section
of `shapes_tables.py`, at two guidance settings for every model:

* diffusers' default, text 7.5 and image 1.5;
* the (text, image) pair of ``--guidance-grid`` with the most successes on the *validation* edits (ties: more
  preserved, then the earlier pair), measured once on the test edits. Chosen on validation, reported on test.

Rates carry Wilson 95 % intervals. Elo: every pair of models on every test edit, judged by the Shapes
evaluator (a success beats a failure; between two successes or two failures, the output with more of the asked
change and the rest preserved right wins; otherwise a draw), with 95 % intervals over 1000 orders.

Runs (they resume): ``RUNS/uip2p/<model>`` (test, default guidance, with the figure's images),
``RUNS/uip2p-validation/<model>/t<T>-i<I>`` (evaluator only) and ``RUNS/uip2p-chosen/<model>`` (test, chosen,
when that is not the default). ``--from-runs`` redraws the section from them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import tempfile
from pathlib import Path

import PIL.Image
import PIL.ImageDraw

from diffusers_uip2p.evaluation import ShapesBenchmark, run_shapes
from diffusers_uip2p.evaluation.editors import InstructionEditor
from diffusers_uip2p.evaluation.elo import elo_confidence, leaderboard_markdown, plot_elo
from diffusers_uip2p.evaluation.intervals import wilson_interval
from diffusers_uip2p.evaluation.metrics import Metrics
from diffusers_uip2p.evaluation.runners import finished_rows
from diffusers_uip2p.shapes import CATEGORIES, render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.pretrained import load_shapes_clip, shapes_model_path

SHIPPED_EDITORS = {"Base (T2I UNet widened, untrained)": None, "InstructPix2Pix (supervised)": "ip2p",
                   "UIP2P (ERC only)": "uip2p"}
DEFAULT_GUIDANCE = (7.5, 1.5)
CLIP_METRICS = ["clip_i", "clip_t", "clip_dir"]
RATES = [("success", "Success"), ("edit_applied", "Edit applied"), ("preserved", "Preserved")]
MEANS = [("psnr_outside", "PSNR outside (dB)", ".2f"), ("clip_i", "CLIP-I", ".3f"), ("clip_t", "CLIP-T", ".3f"),
         ("clip_dir", "CLIP_dir", ".3f")]


def guidance_pair(text: str) -> tuple[float, float]:
    """``"3/1.5"`` → (3.0, 1.5): text guidance / image guidance."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*/\s*([0-9.]+)\s*", text)
    if match is None:
        raise ValueError(f"--guidance-grid takes TEXT/IMAGE guidance pairs such as 3/1.5, got {text!r}.")
    return float(match.group(1)), float(match.group(2))


def _pair_name(pair: tuple[float, float]) -> str:
    return f"t{pair[0]:g}-i{pair[1]:g}"


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


def drawable(label: str) -> str:
    """A label as the pictures write it: Pillow's default font has no Greek."""
    return label.replace("λ", "lambda")


def choose_guidance(validation: dict[tuple[float, float], dict[str, dict]]) -> tuple[float, float]:
    """The pair with the most validation successes; ties go to more preserved, then to the earlier pair."""
    def score(item):
        index, (pair, by_key) = item
        return (sum(r["success"] for r in by_key.values()), sum(r["preserved"] for r in by_key.values()), -index)

    return max(enumerate(validation.items()), key=score)[1][0]


def judged_winner(a: dict, b: dict) -> str:
    """"a", "b" or "draw" by the Shapes evaluator (see the module docstring)."""
    score_a, score_b = (a["success"], a["edit_applied"] + a["preserved"]), (b["success"], b["edit_applied"] + b["preserved"])
    return "a" if score_a > score_b else "b" if score_b > score_a else "draw"


def _rate_cell(values: list[bool]) -> str:
    low, high = wilson_interval(sum(values), len(values))
    return f"{sum(values) / len(values):.2f} [{low:.2f}, {high:.2f}]"


def table(by_label: dict[str, dict[str, dict]], guidance: dict[str, tuple[float, float]] | None = None,
          categories: list[str] = ("all", *CATEGORIES)) -> str:
    """Per category (all first): counts, rates with Wilson intervals and the means, one line per model."""
    header = ["model", *(["guidance (text/image)"] if guidance else []), "category", "n",
              *(f"{name} [95 % CI]" for _, name in RATES), *(name for _, name, _ in MEANS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + ("---|" if guidance else "") + "---|---:|"
             + "---|" * len(RATES) + "---:|" * len(MEANS)]
    for category in categories:
        for label, by_key in by_label.items():
            chosen = [r for r in by_key.values() if category in ("all", r["category"])]
            if not chosen:
                continue
            cells = [label, *([f"{guidance[label][0]:g}/{guidance[label][1]:g}"] if guidance else []), category,
                     str(len(chosen)), *(_rate_cell([bool(r[key]) for r in chosen]) for key, _ in RATES)]
            for key, _, form in MEANS:
                values = [r[key] for r in chosen if r.get(key) is not None]
                cells.append(format(sum(values) / len(values), form) if values else "–")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def elo(by_label: dict[str, dict[str, dict]]):
    keys = sorted(next(iter(by_label.values())))
    votes = [(a, b, judged_winner(by_label[a][key], by_label[b][key])) for key in keys
             for a, b in itertools.combinations(by_label, 2)]
    return elo_confidence(votes), len(votes)


def figure_keys(num_edits: int) -> dict[str, str]:
    """The first test edit of each category (category → key): the figure's rows."""
    chosen = {}
    for key, edit in zip(ShapesBenchmark("test", num_edits).keys, split_edits("test", num_edits), strict=True):
        chosen.setdefault(edit.category, key)
    return {category: chosen[category] for category in CATEGORIES if category in chosen}


def figure(folders: dict[str, Path], num_edits: int, path: Path, scale: int = 2) -> None:
    """One test edit per category: input | true edit | each model's output (default guidance)."""
    edits = dict(zip(ShapesBenchmark("test", num_edits).keys, split_edits("test", num_edits), strict=True))
    keys = list(figure_keys(num_edits).values())
    size, header, width = 64 * scale, 40, max(64 * scale, 150)
    columns = ["input", "true edit", *folders]
    grid = PIL.Image.new("RGB", (len(columns) * (width + 4), header + len(keys) * (size + 16)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for c, name in enumerate(columns):
        name = drawable(name)
        for i in range(3):
            draw.text((c * (width + 4) + 2, 1 + 12 * i), name[24 * i:24 * (i + 1)], fill="black")
    for r, key in enumerate(keys):
        y = header + r * (size + 16)
        draw.text((2, y), edits[key].instruction[:70], fill="black")
        images = [render(edits[key].source), render(edits[key].target)]
        images += [PIL.Image.open(folder / "images" / f"{key}.png") for folder in folders.values()]
        for c, image in enumerate(images):
            grid.paste(image.resize((size, size), PIL.Image.NEAREST), (c * (width + 4), y + 12))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def editor_folders(args, scratch: Path) -> dict[str, Path]:
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


def measure(args) -> None:
    """Run (or resume) every editor: test at the default guidance, the grid on validation, test at the choice."""
    from transformers import CLIPProcessor

    from diffusers_uip2p.cli.commands import load_edit_pipeline

    clip, tokenizer, image_processor = load_shapes_clip()
    metrics = Metrics(CLIP_METRICS, clip=(clip, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)),
                      clip_id="shipped Shapes CLIP")
    runs, kept = Path(args.runs), set(figure_keys(args.num_edits).values())
    with tempfile.TemporaryDirectory() as scratch:
        for label, folder in editor_folders(args, Path(scratch)).items():
            pipe = load_edit_pipeline(str(folder))  # as `diffusers-uip2p edit --model FOLDER` loads it

            def run(pair, split, output, **options):
                editor = InstructionEditor(pipe, model_id=label, seed=0, num_inference_steps=args.edit_steps,
                                           guidance_scale=pair[0], image_guidance_scale=pair[1])
                return run_shapes(editor, output, split=split, num_edits=args.num_edits, command=args.command,
                                  **options)

            default = runs / "uip2p" / slug(label)
            run(DEFAULT_GUIDANCE, "test", default, metrics=metrics, save_images=True)
            for image in (default / "images").glob("*.png"):  # only the figure's are kept (the tree's size)
                if image.stem not in kept:
                    image.unlink()
            for pair in args.guidance_grid:
                run(pair, "validation", runs / "uip2p-validation" / slug(label) / _pair_name(pair))
            pair = choose_guidance({p: finished_rows(runs / "uip2p-validation" / slug(label) / _pair_name(p))
                                    for p in args.guidance_grid})
            if pair != DEFAULT_GUIDANCE:
                run(pair, "test", runs / "uip2p-chosen" / slug(label), metrics=metrics)


def _results(folder: Path) -> dict[str, dict]:
    """label → results.json of the finished runs directly under ``folder``."""
    found = {}
    for path in sorted(folder.glob("*/results.json")):
        result = json.loads(path.read_text())
        found[result["editor"]["model"]] = result | {"folder": path.parent}
    return found


def tracked(args) -> dict:
    """The finished runs under ``--runs``, in table order (shipped editors, then ablations by name)."""
    runs = Path(args.runs)
    default = _results(runs / "uip2p")
    if not default:
        raise SystemExit(f"no finished runs under {runs / 'uip2p'}: measure them first (without --from-runs)")
    order = [label for label in SHIPPED_EDITORS if label in default] + sorted(set(default) - set(SHIPPED_EDITORS))
    chosen_runs = _results(runs / "uip2p-chosen")
    measured = {"default": {}, "chosen": {}, "guidance": {}, "validation": {}, "folders": {}, "results": []}
    for label in order:
        by_pair = {}  # (text, image) guidance → validation run folder
        for path in sorted((runs / "uip2p-validation" / slug(label)).glob("*/results.json")):
            result = json.loads(path.read_text())
            by_pair[(result["editor"]["guidance_scale"], result["editor"]["image_guidance_scale"])] = path.parent
        grid = args.guidance_grid
        missing = [f"{t:g}/{i:g}" for t, i in grid if (t, i) not in by_pair]
        if missing:
            raise SystemExit(f"{label}: no validation run at guidance {', '.join(missing)} under "
                             f"{runs / 'uip2p-validation' / slug(label)}: measure them first (without --from-runs)")
        validation = {p: finished_rows(by_pair[p]) for p in grid}
        pair = choose_guidance(validation)
        measured["default"][label] = finished_rows(default[label]["folder"])
        measured["guidance"][label] = pair
        measured["validation"][label] = {p: sum(r["success"] for r in by_key.values())
                                         for p, by_key in validation.items()}
        chosen = default[label] if pair == DEFAULT_GUIDANCE else chosen_runs.get(label)
        if chosen is None:
            raise SystemExit(f"{label}: guidance {pair} was chosen on validation but has no test run under "
                             f"{runs / 'uip2p-chosen'}")
        measured["chosen"][label] = finished_rows(chosen["folder"])
        measured["results"] += [default[label], chosen]
        measured["folders"][label] = default[label]["folder"]
    return measured


def _shared_setting(results: list[dict], what: str, read):
    """The one value of a setting every run used: a table of runs made differently would mislead."""
    values = {read(result) for result in results}
    if len(values) != 1:
        raise ValueError(f"the runs differ in their {what}: {sorted(values)}")
    return values.pop()


def readme_summary(measured: dict) -> str:
    """The README's short form: per model, success and preserved at both settings, and the default Elo."""
    ratings = {e.model: e for e in elo(measured["default"])[0].estimates}
    lines = ["| model | success, default guidance | preserved | guidance chosen on validation | success there "
             "| preserved | Elo (default) |", "|---|---|---|---:|---|---|---:|"]
    for label, by_key in measured["default"].items():
        chosen, (text, image), rating = measured["chosen"][label], measured["guidance"][label], ratings[label]
        cells = [_rate_cell([bool(r["success"]) for r in by_key.values()]),
                 _rate_cell([bool(r["preserved"]) for r in by_key.values()]), f"{text:g} / {image:g}",
                 _rate_cell([bool(r["success"]) for r in chosen.values()]),
                 _rate_cell([bool(r["preserved"]) for r in chosen.values()]),
                 f"{rating.mean:.0f} [{rating.low:.0f}, {rating.high:.0f}]"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def section(args) -> str:
    if not args.from_runs:
        measure(args)
    measured = tracked(args)
    args.readme_summary = readme_summary(measured)
    num_edits = _shared_setting(measured["results"], "number of test edits", lambda result: result["items"])
    steps = _shared_setting(measured["results"], "number of steps", lambda r: r["editor"]["num_inference_steps"])
    pictures = Path(args.pictures)
    figure(measured["folders"], num_edits, pictures / "shapes-uip2p.png")
    parts = []
    for name, title in (("default", "diffusers' default guidance, text 7.5 and image 1.5, per category"),
                        ("chosen", "each model's guidance chosen on validation")):
        ratings, votes = elo(measured[name])
        picture = "shapes-elo.png" if name == "default" else "shapes-elo-chosen.png"
        drawn = dataclasses.replace(ratings, estimates=[dataclasses.replace(e, model=drawable(e.model))
                                                        for e in ratings.estimates])
        plot_elo(drawn, pictures / picture, title=f"Shapes world: Elo from evaluator-judged pairs ({name} guidance)")
        parts.append(f"#### At {title}\n\n"
                     + (table(measured[name]) if name == "default" else
                        table(measured[name], measured["guidance"], categories=["all"]))
                     + f"\n\nElo from evaluator-judged pairs ({votes} comparisons):\n\n"
                     f"{leaderboard_markdown(ratings).rstrip()}\n\n"
                     f"![Elo at {name} guidance](../docs/images/{picture})")
    grid = ", ".join(f"{t:g}/{i:g}" for t, i in args.guidance_grid)
    choices = "; ".join(f"{label}: {', '.join(f'{t:g}/{i:g} {s}' for (t, i), s in by_pair.items())}"
                        for label, by_pair in measured["validation"].items())
    commands = sorted({result["command"] for result in measured["results"]})
    return (f"### UIP2P Table 3 and the loss ablation ({num_edits} test edits, {steps} steps, seed 0)\n\n"
            f"Guidance chosen per model among {grid} (text/image) on {num_edits} validation edits "
            f"(successes: {choices}).\n\n" + "\n\n".join(parts)
            + "\n\n![one test edit per category (default guidance)](../docs/images/shapes-uip2p.png)\n\n"
            + ("Measured by " + ", ".join(f"`{c}`" for c in commands) + "; redrawn from the tracked runs.\n\n"
               if args.from_runs else "")).rstrip("\n")
