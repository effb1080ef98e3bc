"""Instruction editors side by side on the same Shapes edits: success and preservation with Wilson 95 %
intervals, and paired differences (bootstrap interval over edits, McNemar's exact p) against the first.

Reads finished `diffusers-uip2p evaluate shapes` run folders (one per editor and split) and writes the
Markdown table and a JSON record. A candidate is chosen on the validation runs and reported on test:

    .venv/bin/python benchmarks/editor_comparison.py --name ip2p-v2 \\
        "shipped IP2P=work/eval/ip2p-shipped-{split}" "IP2P v2=work/eval/ip2p-v2-{split}"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from diffusers_uip2p.evaluation.intervals import compare_paired, wilson_interval
from diffusers_uip2p.evaluation.runners import finished_rows

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("validation", "test")


def rows(folder: Path) -> dict[str, dict]:
    """key → the evaluator's row, from a finished run folder."""
    found = finished_rows(folder)
    if not found:
        raise SystemExit(f"{folder}: no finished records (run `diffusers-uip2p evaluate shapes` first)")
    return found


def rate(values: list[bool]) -> dict:
    low, high = wilson_interval(sum(values), len(values))
    return {"successes": sum(values), "n": len(values), "rate": sum(values) / len(values), "low": low, "high": high}


def compare(runs: dict[str, Path]) -> dict:
    """Per editor: success, preserved and edit-applied rates; per later editor: paired differences."""
    table = {label: rows(folder) for label, folder in runs.items()}
    keys = sorted(set.intersection(*(set(r) for r in table.values())))
    reference = next(iter(table))
    result = {}
    for label, by_key in table.items():
        entry = {field: rate([bool(by_key[k][field]) for k in keys]) for field in ("success", "preserved",
                                                                                   "edit_applied")}
        if label != reference:
            entry["vs_reference"] = {field: compare_paired([bool(by_key[k][field]) for k in keys],
                                                           [bool(table[reference][k][field]) for k in keys])
                                     for field in ("success", "preserved")}
        result[label] = entry
    return {"edits": len(keys), "reference": reference, "editors": result}


def markdown(split: str, measured: dict) -> str:
    lines = [f"**{split}** ({measured['edits']} edits; differences paired against {measured['reference']})", "",
             "| editor | success [95 % CI] | preserved [95 % CI] | edit applied | Δ success [CI], McNemar p | "
             "Δ preserved [CI], McNemar p |", "|---|---|---|---:|---|---|"]
    for label, entry in measured["editors"].items():
        cells = [f"{entry[f]['successes']}/{entry[f]['n']} = {entry[f]['rate']:.2f} "
                 f"[{entry[f]['low']:.2f}, {entry[f]['high']:.2f}]" for f in ("success", "preserved")]
        cells.append(f"{entry['edit_applied']['rate']:.2f}")
        for field in ("success", "preserved"):
            d = entry.get("vs_reference", {}).get(field)
            cells.append("—" if d is None else f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}], "
                                               f"p = {d['mcnemar_p']:.2g}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=FOLDER",
                        help="a run folder per editor; {split} in FOLDER stands for validation and test")
    parser.add_argument("--name", required=True, help="the record's name: benchmarks/results/NAME.json")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    args = parser.parse_args(argv)
    runs = dict(entry.split("=", 1) for entry in args.runs)
    record = {"command": "python benchmarks/editor_comparison.py " + " ".join(argv or sys.argv[1:]), "splits": {}}
    for split in args.splits:
        folders = {label: Path(folder.format(split=split)) for label, folder in runs.items()}
        if all(f.is_dir() for f in folders.values()):
            record["splits"][split] = compare(folders)
            print(markdown(split, record["splits"][split]) + "\n")
    (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
