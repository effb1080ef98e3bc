"""How well can a Shapes editor do at all? The evaluator's verdict on the *true* edited image after the VAE
round trip, the best output a latent editor can decode.

Issue 19's bars (success ≥ 0.6, preserved ≥ 0.8) only mean something if the true edit passes them once it
has been through the shipped VAE. This judges, on the first N edits of a split:

* the true edited image as rendered (the evaluator's own check: every edit must succeed);
* the same image encoded to its posterior mode and decoded, as every latent editor's output is, and what
  the evaluator misreads in it; and how many *input* scenes read back exactly after the same round trip;
* with ``--items`` (an evaluation run's ``items-*.jsonl``), that editor's success on the same edits, on all of
  them and on those whose round trip succeeds: how far it is from the ceiling, edit by edit.

    .venv/bin/python benchmarks/shapes_ceiling.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

from diffusers import StableDiffusionPipeline

from diffusers_uip2p.evaluation.benchmarks import ShapesBenchmark
from diffusers_uip2p.evaluation.intervals import wilson_interval
from diffusers_uip2p.shapes import render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.evaluator import _elements, judge_edit, read_scene
from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline
from diffusers_uip2p.shapes.training_utils import scenes_to_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import environment, save_report  # noqa: E402
from shapes_quality import vae_round_trip  # noqa: E402


def round_trip(pipe, scenes) -> list:
    """Rendered ``scenes`` through the VAE's posterior mode and back (shapes_quality's round trip), as PIL."""
    return pipe.image_processor.postprocess(vae_round_trip(pipe, scenes_to_tensor(scenes)), output_type="pil")


def misread(scene, reading) -> list[str]:
    """What ``reading`` gets wrong about ``scene``: a global attribute, or an object's presence or property."""
    wanted, seen = _elements(scene), _elements(reading)
    wrong = []
    for key in wanted:
        a, b = wanted[key], seen[key]
        if a == b:
            continue
        if not isinstance(key, tuple):
            wrong.append(key)
        elif a is None or b is None:
            wrong.append("object present or absent")
        else:
            wrong += [f"object {field}" for field in ("shape", "colour", "size", "rotation")
                      if getattr(a, field, None) != getattr(b, field, None)]
    return wrong


def rates(judgements, count: int) -> dict:
    result = {}
    for field in ("success", "edit_applied", "preserved"):
        hits = sum(getattr(j, field) for j in judgements)
        low, high = wilson_interval(hits, count)
        result[field] = {"count": hits, "rate": hits / count, "wilson95": [low, high]}
    return result


def against_ceiling(path: str, passed: dict) -> dict:
    """An evaluation run's per-edit success beside the round trip's, on the edits both judged."""
    rows = [row for line in Path(path).read_text().splitlines() for row in json.loads(line)["rows"]]
    missing = [row["key"] for row in rows if row["key"] not in passed]
    if missing:
        raise ValueError(f"--items {path} has edits beyond --num-edits (first: {missing[0]}).")
    ceiling = [row for row in rows if passed[row["key"]]]
    return {"edits": len(rows), "success": sum(row["success"] for row in rows), "ceiling_passes": len(ceiling),
            "success_where_ceiling_passes": sum(row["success"] for row in ceiling)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="validation")
    parser.add_argument("--num-edits", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--items", nargs="*", default=[], help="items-*.jsonl of editors evaluated on this split")
    parser.add_argument("--output", default="benchmarks/results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_shapes_pipeline(StableDiffusionPipeline)
    edits = split_edits(args.split, args.num_edits)
    targets = [render(edit.target) for edit in edits]
    decoded = round_trip(pipe, [edit.target for edit in edits])
    inputs_read = sum(_elements(read_scene(image)) == _elements(edit.source)
                      for edit, image in zip(edits, round_trip(pipe, [edit.source for edit in edits])))
    rendered = [judge_edit(e.source, e.instruction, t, e.category) for e, t in zip(edits, targets)]
    through_vae = [judge_edit(e.source, e.instruction, d, e.category) for e, d in zip(edits, decoded)]
    failures = Counter(e.kind for e, j in zip(edits, through_vae) if not j.success)
    report = {
        "environment": environment("cpu"), "split": args.split, "num_edits": args.num_edits,
        "rendered_target": rates(rendered, args.num_edits), "vae_round_trip": rates(through_vae, args.num_edits),
        "round_trip_failures_by_kind": dict(failures.most_common()),
        "round_trip_misread_elements": dict(Counter(
            wrong for e, j in zip(edits, through_vae) for wrong in misread(e.target, j.reading)).most_common()),
        "inputs_read_exactly_after_round_trip": {
            "count": inputs_read, "rate": inputs_read / args.num_edits,
            "wilson95": list(wilson_interval(inputs_read, args.num_edits))},
    }
    passed = dict(zip(ShapesBenchmark(args.split, args.num_edits).keys, (j.success for j in through_vae)))
    report["editors"] = {path: against_ceiling(path, passed) for path in args.items}
    for name in ("rendered_target", "vae_round_trip"):
        row = report[name]
        print(f"{name:16s} " + "  ".join(
            f"{field} {row[field]['count']}/{args.num_edits} [{row[field]['wilson95'][0]:.2f}, "
            f"{row[field]['wilson95'][1]:.2f}]" for field in row))
    print("round-trip failures by kind:", report["round_trip_failures_by_kind"])
    print("elements misread after the round trip:", report["round_trip_misread_elements"])
    print(f"input scenes read exactly after the round trip: {inputs_read}/{args.num_edits}")
    for path, row in report["editors"].items():
        print(f"{path}: success {row['success']}/{row['edits']}; on the {row['ceiling_passes']} edits whose round "
              f"trip succeeds {row['success_where_ceiling_passes']}; round trip {row['ceiling_passes']}/{row['edits']}")
    save_report(report, args.output, f"shapes-ceiling-{args.split}.json")
    return report


if __name__ == "__main__":
    main()
