"""Per-edit records of every editing method on every inversion, on a Shapes split (the raw data behind
`shapes_editing.py`'s tables). Resumable and shardable: each shard appends one JSON line per finished edit.

For each edit (input scene rendered, inverted with its exact caption, edited towards the edited caption):

* DSI: one `AutoEditPipeline` call per method with the target prompt once per target-branch rule
  (``target_rule=[...]``): every rule samples from the same inversion, in one batch, beside one source row;
* the baselines (``evaluation.edit_baselines``): DDIM inversion at the same UNet budget (2N − 2 steps);
  Direct Inversion at that budget, for the attention methods only (it changes the source row alone, so
  its direct and SDEdit targets are DDIM's); null-text inversion, for P2P by default (costlier: its
  optimisation calls are recorded);
* the router's decision for the pair (``pipe.route_edit``), so that ``auto`` with any task → method table
  is read off the single-method records: ``auto`` runs exactly the method it reports (a test holds that).

The Shapes evaluator judges each output against the true edited scene.

    .venv/bin/python benchmarks/shapes_editing_runs.py --split validation --num-edits 50 --shard 0/2 --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusers_uip2p.evaluation import ddim_steps_for_same_budget
from diffusers_uip2p.evaluation.edit_baselines import baseline_edit
from diffusers_uip2p.evaluation.editors import weights_fingerprint
from diffusers_uip2p.pipelines.editing import EDIT_METHODS, P2P_SELF_REPLACE_MIN_LEVEL
from diffusers_uip2p.schedulers import BRANCH_RULES
from diffusers_uip2p.shapes import render
from diffusers_uip2p.shapes.dataset import split_edits
from diffusers_uip2p.shapes.evaluator import judge_edit
from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "shapes-editing"


def judged(edit, image, **extra) -> dict:
    j = judge_edit(edit.source, edit.instruction, image, edit.category)
    return {"success": bool(j.success), "edit_applied": bool(j.edit_applied), "preserved": bool(j.preserved),
            "psnr_outside": j.psnr_outside, **extra}


@torch.no_grad()
def run_edit(pipe, edit, args) -> dict:
    """Every (inversion, method) output for one edit, judged."""
    source, target, image = edit.input_caption, edit.edited_caption, render(edit.source)
    route = pipe.route_edit(source, target)
    results = {}
    for method in args.methods:
        out = pipe([target] * len(args.rules), image=image, source_prompt=source, edit_method=method,
                   num_inference_steps=args.steps, guidance_scale=args.guidance_scale, target_rule=list(args.rules),
                   self_replace_min_level=args.self_replace_min_level, output_type="latent")
        images = pipe.decode_latents_to_images(out.latents)
        for row, rule in enumerate(args.rules):
            gaps = out.sync_gap[0::2, row].tolist()  # auxiliary evaluations: the sync gap, per step
            results[f"dsi-{rule}/{method}"] = judged(edit, images[row], sync_gap=gaps)
    clean = pipe.encode_images(pipe.preprocess_images(image))
    for inversion in args.baselines:
        methods = {"null_text": args.null_text_methods, "direct_inversion": args.direct_inversion_methods}
        for method in [m for m in methods.get(inversion, args.methods) if m in args.methods]:
            _, latents, calls = baseline_edit(pipe, clean, [source, target], ddim_steps_for_same_budget(args.steps),
                                              args.guidance_scale, method, inversion=inversion,
                                              self_replace_min_level=args.self_replace_min_level)
            results[f"{inversion}/{method}"] = judged(edit, pipe.decode_latents_to_images(latents)[0], unet_calls=calls)
    return {"task": route.task, "results": results}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="validation", choices=["validation", "test"])
    parser.add_argument("--num-edits", type=int, default=100)
    parser.add_argument("--shard", default="0/1", help="i/n: this process takes edits i, i + n, ...")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance-scale", type=float, default=5.0)
    parser.add_argument("--methods", nargs="+", default=list(EDIT_METHODS), choices=EDIT_METHODS)
    parser.add_argument("--rules", nargs="+", default=list(BRANCH_RULES), choices=BRANCH_RULES)
    parser.add_argument("--baselines", nargs="*", default=["ddim", "direct_inversion", "null_text"])
    parser.add_argument("--null-text-methods", nargs="*", default=["p2p"], choices=EDIT_METHODS)
    # Direct Inversion changes only the source row, so its direct and SDEdit targets (which never read the
    # source) are DDIM's, bit for bit: only the attention methods are worth running.
    parser.add_argument("--direct-inversion-methods", nargs="*", default=["p2p", "masactrl"], choices=EDIT_METHODS)
    parser.add_argument("--self-replace-min-level", type=int, default=P2P_SELF_REPLACE_MIN_LEVEL,
                        help="P2P's self-attention levels (plan_edit); recorded in each record")
    parser.add_argument("--tag", default="", help="added to the records' file name (e.g. a rerun of one method)")
    parser.add_argument("--runs", default=str(RUNS))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shard, shards = (int(x) for x in args.shard.split("/"))
    if not 0 <= shard < shards:
        parser.error(f"--shard must be i/n with 0 <= i < n, got {args.shard!r}.")

    pipe = load_shapes_pipeline()
    pipe.set_progress_bar_config(disable=True)
    weights = weights_fingerprint(pipe)
    tag = f"-{args.tag}" if args.tag else ""
    path = Path(args.runs) / args.split / f"records{tag}-{shard}-of-{shards}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["weights"] != weights:
                raise SystemExit(f"{path} holds records of other weights ({record['weights']}, shipped {weights}); "
                                 "delete it to measure again.")
            done.add(record["index"])
    settings = {"steps": args.steps, "ddim_steps": ddim_steps_for_same_budget(args.steps),
                "guidance_scale": args.guidance_scale, "weights": weights,
                "self_replace_min_level": args.self_replace_min_level}
    edits = split_edits(args.split, args.num_edits)
    todo = [i for i in range(shard, len(edits), shards) if i not in done]
    with path.open("a") as records:
        for i in tqdm(todo, desc=f"{args.split} edits, shard {args.shard}"):
            start = time.time()
            record = run_edit(pipe, edits[i], args)
            records.write(json.dumps({"index": i, "category": edits[i].category, "kind": edits[i].kind, **settings,
                                      **record, "seconds": time.time() - start}) + "\n")
            records.flush()
    print(f"wrote {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
