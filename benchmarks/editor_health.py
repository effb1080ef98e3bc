"""The training health checks (`diffusers_uip2p.training.health`) of finished editor folders: held-out ε-MSE
against the base text-to-image model's bound, and Shapes success/preserved on sampled validation edits.

Gives the shipped editors (trained before the checks existed) the same numbers a new run logs, so that a
new recipe and the old one compare on the same held-out records.

    .venv/bin/python benchmarks/editor_health.py shapes:uip2p shapes:ip2p work/uip2p-anchor --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from diffusers_uip2p.pipelines import UIP2PPipeline
from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline, resolve_model, shared_components
from diffusers_uip2p.training.erc import EditModels
from diffusers_uip2p.training.health import HealthCheck, shapes_health_records

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="editor folders or shapes:NAME")
    parser.add_argument("--records", type=int, default=64)
    parser.add_argument("--edits", type=int, default=16)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "editor-health.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    base = load_shapes_pipeline(StableDiffusionPipeline)  # the text-to-image model every editor starts from
    models = EditModels.from_pipeline(base)
    records, edits = shapes_health_records(args.records)
    health = HealthCheck(models, records, base.unet.eval(), edits[: args.edits])
    results = {}
    for name in args.models:
        folder = resolve_model(name)
        pipe = UIP2PPipeline.from_pretrained(folder, **shared_components(folder), safety_checker=None,
                                             feature_extractor=None)
        results[name] = health(pipe.unet, pipe)
        print(name, {k: round(v, 4) for k, v in results[name].items()})
    output = Path(args.output)
    existing = json.loads(output.read_text()) if output.is_file() else {}
    existing.update({"command": " ".join(["python", *sys.argv]), "records": args.records, "edits": args.edits,
                     "results": {**existing.get("results", {}), **results}})
    output.write_text(json.dumps(existing, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
