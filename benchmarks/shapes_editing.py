"""Editing on exact inversion, on the Shapes world: each method on DSI under each target-branch rule and on
the peers' inversions (DDIM, Direct Inversion, null-text), with intervals; the DSI paper's Tables 3 and 5.

Reads the per-edit records of `shapes_editing_runs.py` (run it first, on the validation and the test
split) and:

1. chooses on **validation** the default target-branch rule (highest success over all methods; ties go
   to preservation, then PSNR outside) and ``auto``'s task → method table (per task the router decides,
   the method with the most successes under that rule);
2. reports on **test**: every (inversion, method) with Wilson 95 % intervals, ``auto`` with the paper's
   table and with the validation table (read off the single-method records of the same edits: ``auto``
   runs exactly the method it reports), per-category success, and paired comparisons on the same edits
   (success difference with a bootstrap interval and McNemar's exact p; PSNR-outside difference with a
   bootstrap interval);
3. draws the mean sync gap per step for each rule (``docs/images/shapes-sync-gap.png``), a grid of
   examples (``docs/images/shapes-editing.png``: ``auto`` on DSI coupled, DSI with the chosen rule and DDIM)
   and P2P's attention maps on one colour change (``docs/images/shapes-attention.png``).

    .venv/bin/python benchmarks/shapes_editing.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from diffusers_uip2p.classifier import DEFAULT_TASK_METHODS
from diffusers_uip2p.evaluation.intervals import compare_paired, paired_bootstrap, wilson_interval
from diffusers_uip2p.pipelines.editing import P2P_SELF_REPLACE_MIN_LEVEL
from diffusers_uip2p.schedulers import BRANCH_RULES
from diffusers_uip2p.shapes import CATEGORIES

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plots import log_line_chart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "shapes-editing"
RULE_COLOURS = {"coupled": (214, 39, 40), "anchored": (31, 119, 180), "midpoint": (44, 160, 44), "ddim": (148, 103, 189)}


def load_records(folder: Path) -> list[dict]:
    """Every edit's records, merged over the folder's files (a later run of one method adds its keys).

    P2P results measured at a self-attention level other than the library's default keep their level in
    the key ("dsi-anchored/p2p@level1"), so that both can be compared on the same edits; records written
    before the level was recorded ran P2P at level 1, the default then.
    """
    merged = {}
    for path in sorted(folder.glob("records*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            level = record.pop("self_replace_min_level", 1)
            results = {key if level == P2P_SELF_REPLACE_MIN_LEVEL or not key.endswith("/p2p") else f"{key}@level{level}":
                       value for key, value in record.pop("results").items()}
            base = merged.setdefault(record["index"], {**record, "results": {}})
            if any(base[k] != record[k] for k in ("weights", "steps", "guidance_scale", "category")):
                raise SystemExit(f"{path} holds edit {record['index']} measured with other weights or settings.")
            clash = {k for k in set(base["results"]) & set(results) if base["results"][k] != results[k]}
            if clash:  # the same measurement repeated (deterministic) is fine; two different ones are not
                raise SystemExit(f"edit {record['index']} has different {sorted(clash)} in two files of {folder}.")
            base["results"].update(results)
    if not merged:
        raise SystemExit(f"no records in {folder}; run benchmarks/shapes_editing_runs.py first.")
    settings = {(r["weights"], r["steps"], r["guidance_scale"]) for r in merged.values()}
    if len(settings) != 1:
        raise SystemExit(f"{folder} mixes records of several weights or settings: {sorted(settings)}.")
    return sorted(merged.values(), key=lambda r: r["index"])


def keys(records: list[dict], variants: bool = True) -> list[str]:
    """The (inversion/method) keys every record has; ``variants=False`` leaves out non-default settings ("@")."""
    common = set(records[0]["results"])
    for record in records[1:]:
        common &= set(record["results"])
    return sorted(key for key in common if variants or "@" not in key)


def score(outcomes: list[dict]) -> tuple:
    """Order for choosing: successes, then preserved, then mean PSNR outside."""
    psnr = [o["psnr_outside"] for o in outcomes if o["psnr_outside"] is not None and math.isfinite(o["psnr_outside"])]
    return (sum(o["success"] for o in outcomes), sum(o["preserved"] for o in outcomes), float(np.mean(psnr)) if psnr else -1)


def choose_rule(records: list[dict]) -> str:
    present = keys(records, variants=False)
    rules = sorted({key.split("/")[0][4:] for key in present if key.startswith("dsi-")})
    return max(rules, key=lambda rule: score([r["results"][key] for r in records for key in present
                                               if key.startswith(f"dsi-{rule}/")]))


def choose_routing(records: list[dict], rule: str) -> dict[str, str]:
    """Per task the router decided on validation, the method that did best there (the paper's otherwise)."""
    methods = sorted({key.split("/")[1] for key in keys(records, variants=False) if key.startswith(f"dsi-{rule}/")})
    table = dict(DEFAULT_TASK_METHODS)
    for task in sorted({r["task"] for r in records}):
        routed = [r for r in records if r["task"] == task]
        table[task] = max(methods, key=lambda m: score([r["results"][f"dsi-{rule}/{m}"] for r in routed]))
    return table


def add_auto(records: list[dict], tables: dict[str, dict[str, str]]) -> None:
    """``auto`` with each table, for every inversion that ran all the methods a table names."""
    for record in records:
        inversions = {key.split("/")[0] for key in record["results"] if "@" not in key}
        for name, table in tables.items():
            for inversion in inversions:
                key = f"{inversion}/{table[record['task']]}"
                if all(f"{inversion}/{m}" in record["results"] for m in set(table.values())):
                    record["results"][f"{inversion}/auto-{name}"] = {**record["results"][key], "routed_to": table[record["task"]]}


def rate(outcomes: list[dict], field: str) -> dict:
    k, n = sum(o[field] for o in outcomes), len(outcomes)
    low, high = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": k / n, "low": low, "high": high}


def summarise(records: list[dict]) -> dict:
    summary = {}
    for key in keys(records):
        outcomes = [r["results"][key] for r in records]
        psnr = [o["psnr_outside"] for o in outcomes if o["psnr_outside"] is not None and math.isfinite(o["psnr_outside"])]
        by_category = {c: rate([r["results"][key] for r in records if r["category"] == c], "success")
                       for c in CATEGORIES if any(r["category"] == c for r in records)}
        summary[key] = {"success": rate(outcomes, "success"), "preserved": rate(outcomes, "preserved"),
                        "edit_applied": rate(outcomes, "edit_applied"),
                        "psnr_outside": float(np.mean(psnr)) if psnr else float("nan"), "by_category": by_category}
    return summary


def paired(records: list[dict], a: str, b: str) -> dict:
    outcomes_a, outcomes_b = [r["results"][a] for r in records], [r["results"][b] for r in records]
    return {"success": compare_paired([o["success"] for o in outcomes_a], [o["success"] for o in outcomes_b]),
            "psnr_outside": paired_bootstrap([o["psnr_outside"] for o in outcomes_a],
                                             [o["psnr_outside"] for o in outcomes_b])}


def fmt_rate(r: dict) -> str:
    return f"{r['k']}/{r['n']} = {r['rate']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"


def markdown(summary: dict, comparisons: dict) -> str:
    lines = ["| inversion | method | success [95 % Wilson] | preserved [95 % Wilson] | PSNR outside (dB) |",
             "|---|---|---|---|---:|"]
    for key, s in summary.items():
        inversion, method = key.split("/")
        lines.append(f"| {inversion} | {method} | {fmt_rate(s['success'])} | {fmt_rate(s['preserved'])} | "
                     f"{s['psnr_outside']:.1f} |")
    lines += ["", "| A − B (same edits) | success difference [95 % bootstrap] | A only / B only | McNemar p | "
              "PSNR outside difference (dB) [95 % bootstrap] |", "|---|---|---|---:|---|"]
    for name, c in comparisons.items():
        s, p = c["success"], c["psnr_outside"]
        lines.append(f"| {name} | {s['mean']:+.2f} [{s['low']:+.2f}, {s['high']:+.2f}] | {s['only_a']} / {s['only_b']} | "
                     f"{s['mcnemar_p']:.3f} | {p['mean']:+.1f} [{p['low']:+.1f}, {p['high']:+.1f}] |")
    return "\n".join(lines)


def category_markdown(summary: dict, selected: list[str]) -> str:
    categories = [c for c in CATEGORIES if c in summary[selected[0]]["by_category"]]
    lines = ["| inversion/method | " + " | ".join(f"{c} (n={summary[selected[0]]['by_category'][c]['n']})"
                                                 for c in categories) + " |", "|---|" + "---:|" * len(categories)]
    for key in selected:
        lines.append(f"| {key} | " + " | ".join(f"{summary[key]['by_category'][c]['rate']:.2f}" for c in categories) + " |")
    return "\n".join(lines)


def sync_gap_picture(records: list[dict], method: str, path: Path) -> None:
    """Mean sync gap per sampling step (log scale) for each rule."""
    curves = {}
    for key in keys(records):
        if key.startswith("dsi-") and key.endswith(f"/{method}") and "sync_gap" in records[0]["results"][key]:
            curve = np.mean([r["results"][key]["sync_gap"] for r in records], axis=0)
            curves[key.split("/")[0][4:]] = (list(range(len(curve))), curve.tolist())
    steps = len(next(iter(curves.values()))[0])
    log_line_chart(dict(sorted(curves.items())), RULE_COLOURS,
                   f"mean sync gap of the target row per step, {method}, {len(records)} test edits",
                   f"sampling step (1 to {steps}, noisy to clean)", path)


@torch.no_grad()
def example_pictures(rule: str, routing: dict, args) -> None:
    """The first test edit of each category: input, true edit, then ``auto`` (validation table) on DSI with the
    paper's coupled rule, on DSI with ``rule``, and on DDIM; and the P2P attention maps of a colour change."""
    from diffusers_uip2p.attention import draw_token_maps
    from diffusers_uip2p.evaluation import ddim_steps_for_same_budget
    from diffusers_uip2p.evaluation.edit_baselines import baseline_edit
    from diffusers_uip2p.shapes import render
    from diffusers_uip2p.shapes.dataset import split_edits
    from diffusers_uip2p.shapes.pretrained import load_shapes_pipeline

    pipe = load_shapes_pipeline()
    pipe.set_progress_bar_config(disable=True)
    edits = split_edits("test", 40)
    firsts = [next(e for e in edits if e.category == c) for c in CATEGORIES if any(e.category == c for e in edits)]
    columns = ["input", "true edit", "DSI coupled", f"DSI {rule}", "DDIM"]
    size, header, label = 128, 14, 130
    grid = PIL.Image.new("RGB", (label + len(columns) * (size + 2), header + len(firsts) * (size + 2)), "white")
    draw = PIL.ImageDraw.Draw(grid)
    for c, name in enumerate(columns):
        draw.text((label + c * (size + 2) + 2, 1), name, fill="black")
    for r, edit in enumerate(firsts):
        image, settings = render(edit.source), dict(num_inference_steps=25, guidance_scale=5.0)
        method = pipe.route_edit(edit.input_caption, edit.edited_caption, routing).method  # what auto runs
        out = pipe([edit.edited_caption] * 2, image=image, source_prompt=edit.input_caption, edit_method=method,
                   target_rule=["coupled", rule], **settings)
        _, ddim, _ = baseline_edit(pipe, pipe.encode_images(pipe.preprocess_images(image)),
                                   [edit.input_caption, edit.edited_caption], ddim_steps_for_same_budget(25), 5.0,
                                   out.edit_method)
        row = [image, render(edit.target), *out.images, pipe.decode_latents_to_images(ddim)[0]]
        draw.text((2, header + r * (size + 2) + 4), f"{edit.category}\n{out.edit_method}", fill="black")
        for c, picture in enumerate(row):
            grid.paste(picture.resize((size, size), PIL.Image.NEAREST), (label + c * (size + 2), header + r * (size + 2)))
    grid.save(args.picture)
    edit = next(e for e in edits if e.kind == "colour_change")
    out = pipe(edit.edited_caption, image=render(edit.source), source_prompt=edit.input_caption, edit_method="p2p",
               target_rule=rule, num_inference_steps=25, guidance_scale=5.0, return_attention_maps=True)
    draw_token_maps(out.images[0], out.attention_maps[0], cell_size=96, columns=10).save(args.attention_picture)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default=str(RUNS))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "shapes-editing.json"))
    parser.add_argument("--sync-gap-picture", default=str(ROOT / "docs" / "images" / "shapes-sync-gap.png"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "images" / "shapes-editing.png"))
    parser.add_argument("--attention-picture", default=str(ROOT / "docs" / "images" / "shapes-attention.png"))
    parser.add_argument("--no-examples", action="store_true", help="skip the example grid (it runs the models)")
    args = parser.parse_args(argv)

    validation = load_records(Path(args.runs) / "validation")
    rule = choose_rule(validation)
    routing = choose_routing(validation, rule)
    test = load_records(Path(args.runs) / "test")
    if test[0]["weights"] != validation[0]["weights"]:
        raise SystemExit("validation and test records were measured with different weights.")
    add_auto(test, {"paper": DEFAULT_TASK_METHODS, "validation": routing})
    add_auto(validation, {"paper": DEFAULT_TASK_METHODS, "validation": routing})
    summary = summarise(test)
    default = f"dsi-{rule}"
    comparisons = {}
    for method in ["direct", "p2p", "masactrl", "sdedit", "auto-paper", "auto-validation"]:
        others = ["ddim", *(f"dsi-{r}" for r in BRANCH_RULES if f"dsi-{r}" != default), "direct_inversion", "null_text"]
        for other in others:  # the other rules too: the chosen one's margin on validation may be noise
            if f"{default}/{method}" in summary and f"{other}/{method}" in summary:
                comparisons[f"{default}/{method} − {other}/{method}"] = paired(test, f"{default}/{method}",
                                                                              f"{other}/{method}")
    for key in [k for k in summary if k.endswith("/p2p") and f"{k}@level1" in summary]:
        comparisons[f"{key} − {key}@level1 (P2P self-attention levels: default vs the old all-but-highest)"] = \
            paired(test, key, f"{key}@level1")
    best_single = max(["direct", "p2p", "masactrl", "sdedit"], key=lambda m: summary[f"{default}/{m}"]["success"]["k"])
    for table in ["auto-paper", "auto-validation"]:
        comparisons[f"{default}/{table} − {default}/{best_single} (best single method)"] = paired(
            test, f"{default}/{table}", f"{default}/{best_single}")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "weights": test[0]["weights"],
              "steps": test[0]["steps"], "ddim_steps": test[0]["ddim_steps"], "guidance_scale": test[0]["guidance_scale"],
              "num_validation_edits": len(validation), "num_test_edits": len(test),
              "chosen_on_validation": {"target_rule": rule, "task_methods": routing,
                                       "rule_scores": {r: score([v["results"][k] for v in validation
                                                                 for k in keys(validation, variants=False)
                                                                 if k.startswith(f"dsi-{r}/") and "auto" not in k])
                                                       for r in sorted({k.split('/')[0][4:] for k in keys(validation)
                                                                        if k.startswith('dsi-')})}},
              "routing_accuracy": float(np.mean([r["task"] == r["category"] for r in test])),
              "summary": summary, "comparisons": comparisons,
              "validation_summary": summarise(validation)}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    sync_gap_picture(test, "p2p", Path(args.sync_gap_picture))
    if not args.no_examples:
        example_pictures(rule, routing, args)
    print(f"chosen on {len(validation)} validation edits: target_rule={rule}, task_methods={routing}")
    print(markdown(summary, comparisons))
    print()
    print(category_markdown(summary, [f"{default}/{m}" for m in ("direct", "p2p", "masactrl", "sdedit", "auto-validation")]
                            + [f"ddim/{m}" for m in ("direct", "p2p", "masactrl", "sdedit", "auto-validation")]))
    print(f"wrote {args.output} and {args.sync_gap_picture}")
    return result


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
