"""How well can a Shapes editor do at all? The evaluator's verdict on the *true* edited image after the VAE
round trip, the best output a latent editor can decode.

Issue 19's bars (success ≥ 0.6, preserved ≥ 0.8) only mean something if the true edit passes them once it
has been through the shipped VAE. This judges, on the first N edits of a split:

* the true edited image as rendered (the evaluator's own check: every edit must succeed);
* the same image encoded to its posterior mode and decoded, as every latent editor's output is;
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

from diffusers_uip2p.evaluation.intervals import wilson_interval
from diffusers_uip2p.shapes import render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.evaluator import judge_edit
from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline
from diffusers_uip2p.training.encoded_records import posterior_mode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import environment, save_report  # noqa: E402


@torch.no_grad()
def round_trip(pipe, images) -> list:
    """``images`` (PIL) through the VAE's posterior mode and back, as PIL."""
    pixels = pipe.image_processor.preprocess(images)
    decoded = pipe.vae.decode(posterior_mode(pipe.vae, pixels)).sample
    return pipe.image_processor.postprocess(decoded, output_type="pil")


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
    decoded = [image for start in range(0, len(targets), 50) for image in round_trip(pipe, targets[start:start + 50])]
    rendered = [judge_edit(e.source, e.instruction, t, e.category) for e, t in zip(edits, targets)]
    through_vae = [judge_edit(e.source, e.instruction, d, e.category) for e, d in zip(edits, decoded)]
    failures = Counter(e.kind for e, j in zip(edits, through_vae) if not j.success)
    report = {
        "environment": environment("cpu"), "split": args.split, "num_edits": args.num_edits,
        "rendered_target": rates(rendered, args.num_edits), "vae_round_trip": rates(through_vae, args.num_edits),
        "round_trip_failures_by_kind": dict(failures.most_common()),
    }
    passed = {f"{args.split}-{i:05d}": j.success for i, j in enumerate(through_vae)}
    report["editors"] = {path: against_ceiling(path, passed) for path in args.items}
    for name in ("rendered_target", "vae_round_trip"):
        row = report[name]
        print(f"{name:16s} " + "  ".join(
            f"{field} {row[field]['count']}/{args.num_edits} [{row[field]['wilson95'][0]:.2f}, "
            f"{row[field]['wilson95'][1]:.2f}]" for field in row))
    print("round-trip failures by kind:", report["round_trip_failures_by_kind"])
    for path, row in report["editors"].items():
        print(f"{path}: success {row['success']}/{row['edits']}; on the {row['ceiling_passes']} edits whose round "
              f"trip succeeds {row['success_where_ceiling_passes']}; round trip {row['ceiling_passes']}/{row['edits']}")
    save_report(report, args.output, f"shapes-ceiling-{args.split}.json")
    return report


if __name__ == "__main__":
    main()
