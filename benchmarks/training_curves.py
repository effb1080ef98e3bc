"""Learning curves of the Shapes editors' training runs: the health checks (held-out ε-MSE against the base
text-to-image model's bound, success on sampled validation edits) and the loss, per step.

Each run's ``training_log.jsonl`` is copied, compact (every health row, the loss averaged over windows of
``--window`` steps), to ``benchmarks/results/training-curves/LABEL.jsonl``, so the pictures can be redrawn
from the tracked copies alone (``--from-results``):

* ``docs/images/health-erc.png``: UIP2P (ERC) runs, the ε-MSE ratio on held-out *input* images (the bar:
  within 2× of the base), beside the shipped UIP2P (ERC only, ``benchmarks/editor_health.py``);
* ``docs/images/health-ip2p.png``: supervised InstructPix2Pix, the ratio on true edited images.

    .venv/bin/python benchmarks/training_curves.py erc-anchor-1=work/uip2p-anchor/training_log.jsonl \\
        erc-anchor-10=work/uip2p-anchor10/training_log.jsonl ip2p-v2=work/ip2p-supervised-v2/training_log.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from plots import log_line_chart  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CURVES = ROOT / "benchmarks" / "results" / "training-curves"
COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
BAR = 2.0  # issue 19: an editor's held-out ε-MSE stays within 2× of the base model's


def compact(log: Path, window: int) -> list[dict]:
    """Every health row; the loss averaged over consecutive windows of ``window`` steps."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    health = [r for r in rows if "health" in r]
    losses = [r for r in rows if "loss" in r]
    windows = [losses[i:i + window] for i in range(0, len(losses), window)]
    averaged = [{"step": w[-1]["step"], "loss": float(np.mean([r["loss"] for r in w])), "steps_averaged": len(w)}
                for w in windows]
    return sorted(health + averaged, key=lambda r: (r["step"], "health" in r))


def health_curve(rows: list[dict], ratio: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r["health"][ratio]) for r in rows if "health" in r]
    return [s for s, _ in points], [v for _, v in points]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="LABEL=PATH to a training_log.jsonl (labels starting erc- or ip2p-)")
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--from-results", action="store_true", help="redraw from the tracked copies only")
    parser.add_argument("--editor-health", default=str(ROOT / "benchmarks" / "results" / "editor-health.json"))
    parser.add_argument("--pictures", default=str(ROOT / "docs" / "images"), help="folder of the health-*.png pictures")
    args = parser.parse_args(argv)
    CURVES.mkdir(parents=True, exist_ok=True)
    for run in args.runs:
        label, _, path = run.partition("=")
        if not label.startswith(("erc-", "ip2p-")) or not Path(path).is_file():
            parser.error(f"{run!r}: expected LABEL=PATH to an existing training_log.jsonl, LABEL starting erc- or ip2p-")
        rows = compact(Path(path), args.window)
        (CURVES / f"{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    runs = {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(CURVES.glob("*.jsonl"))}
    if not runs:
        parser.error(f"no runs given and none in {CURVES}")
    shipped = json.loads(Path(args.editor_health).read_text())["results"]
    # editor-health.json measured the editors shipped before these runs (ip2p has since been replaced by ip2p-v2)
    for family, ratio, what, reference, name in (
            ("erc", "input_eps_ratio", "input images (ERC sees only these)", "shapes:uip2p", "shipped uip2p"),
            ("ip2p", "edit_eps_ratio", "true edited images", "shapes:ip2p", "ip2p before v2")):
        chosen = {label: rows for label, rows in runs.items() if label.startswith(f"{family}-")}
        if not chosen:
            continue
        curves = {label: health_curve(rows, ratio) for label, rows in chosen.items()}
        colours = {label: COLOURS[i % len(COLOURS)] for i, label in enumerate(curves)}
        levels = {name: shipped[reference][ratio], f"bar {BAR:g}x": BAR}
        colours.update({name: (90, 90, 90), f"bar {BAR:g}x": (0, 150, 0)})
        first, last = (f(f(steps) for steps, _ in curves.values()) for f in (min, max))
        log_line_chart(curves, colours, f"held-out eps-MSE / base model's, on {what}",
                       f"training step ({first} to {last})", Path(args.pictures) / f"health-{family}.png",
                       levels=levels)
        for label, (steps, values) in curves.items():
            last = [r["health"] for r in chosen[label] if "health" in r][-1]
            print(f"{label}: {ratio} {values[0]:.2f} (step {steps[0]}) -> {values[-1]:.2f} (step {steps[-1]}); "
                  f"last check: success {last['success']:.3f}, preserved {last['preserved']:.3f} "
                  f"of {last['judged_edits']} edits")


if __name__ == "__main__":
    main()
