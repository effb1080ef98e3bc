"""The papers' tables on the Shapes world, reproducible on a laptop CPU with the shipped models.

Sections (each writes its runs under ``--runs``; rerunning resumes, and ``--sections`` picks some):

* ``reconstruction``: DSI Table 2. PSNR/SSIM of DDIM inversion (2N − 2 steps), Dual-Schedule Inversion
  (N steps, the same UNet calls) and the VAE round trip (the ceiling), on test scenes and their captions.
* ``editing``: DSI Tables 3 and 5. Each editing method on DSI (each target-branch rule), DDIM inversion,
  Direct Inversion and null-text inversion, and ``auto``, with intervals: read from
  `benchmarks/shapes_editing.py`'s result (run it and `shapes_editing_runs.py` first).
* ``uip2p``: UIP2P Table 3 and its loss ablation (`uip2p_tables.py`). The untrained base (the text-to-image
  UNet widened to 8 channels), supervised InstructPix2Pix, UIP2P trained with ERC only, and the ablation
  models given with ``--ablation``, all editing the same test edits with the same seed, at diffusers' default
  guidance and at each model's guidance chosen on validation. Scored by the Shapes evaluator (rates with
  Wilson intervals) and the Shapes CLIP (CLIP-I, CLIP-T, CLIP_dir), per edit category; Elo from
  evaluator-judged pairs; a figure with one test edit per category.

The Markdown goes into ``benchmarks/RESULTS.md`` between ``<!-- shapes-tables -->`` markers, and the UIP2P
table's short form into the README between ``<!-- uip2p-summary -->`` markers (with ``--no-write``, into
``--runs``/readme-summary.md).

    .venv/bin/python benchmarks/shapes_tables.py --threads 1 \\
        --ablation "L_CLIP + L_recon=work/ablation-clip-recon" "+ L_sim=work/ablation-clip-recon-sim"

``--from-runs`` redraws the ``uip2p`` section (text and pictures) from the tracked runs without a model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from diffusers_uip2p.evaluation import ShapesBenchmark, run_reconstruction
from diffusers_uip2p.evaluation.editors import weights_fingerprint
from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import shapes_editing  # noqa: E402
import uip2p_tables  # noqa: E402

SECTIONS = ("reconstruction", "editing", "uip2p")
MARKERS = ("<!-- shapes-tables:start -->", "<!-- shapes-tables:end -->")
README_MARKERS = ("<!-- uip2p-summary:start -->", "<!-- uip2p-summary:end -->")


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


def replace_between_markers(path: Path, text: str, markers: tuple[str, str] = MARKERS) -> None:
    content = path.read_text()
    block = f"{markers[0]}\n{text}\n{markers[1]}"
    if markers[0] in content:
        start, end = content.index(markers[0]), content.index(markers[1]) + len(markers[1])
        content = content[:start] + block + content[end:]
    else:
        content = content.rstrip("\n") + "\n\n## Results on the Shapes world\n\n" + block + "\n"
    path.write_text(content)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--num-reconstruction", type=int, default=24)
    parser.add_argument("--dsi-steps", type=int, default=50)
    parser.add_argument("--num-edits", type=int, default=100,
                        help="test edits of the UIP2P table and Elo, and validation edits choosing the guidance")
    parser.add_argument("--guidance-grid", nargs="+", type=uip2p_tables.guidance_pair,
                        default=[uip2p_tables.DEFAULT_GUIDANCE, (3.0, 1.5), (3.0, 3.0)], metavar="TEXT/IMAGE",
                        help="uip2p: the guidance pairs each model chooses from on validation (default 7.5/1.5 "
                             "3/1.5 3/3)")
    parser.add_argument("--edit-steps", type=int, default=50)
    parser.add_argument("--ablation", nargs="*", default=[], metavar="LABEL=FOLDER",
                        help="ablation models (UIP2P folders) to add to the UIP2P table and the Elo")
    parser.add_argument("--runs", default=str(ROOT / "benchmarks" / "results" / "shapes-tables"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--editors", nargs="*", choices=("base", "ip2p", "uip2p"), default=None,
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
    builders = {"reconstruction": reconstruction_section, "editing": editing_section, "uip2p": uip2p_tables.section}
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
    if "uip2p" in args.sections:
        if args.no_write:
            (Path(args.runs) / "readme-summary.md").write_text(args.readme_summary + "\n")
        else:
            replace_between_markers(ROOT / "README.md", args.readme_summary, README_MARKERS)
    return text


if __name__ == "__main__":
    main()
