#!/usr/bin/env bash
# Regenerates every picture and quoted output of README.md and benchmarks/RESULTS.md, at fixed seeds:
# the README's command outputs and the pictures of the editing and quality benchmarks from the shipped
# models; the tables, Elo and learning curves from the tracked measurement records (the models they
# measured are training outputs that are not shipped). About 15 minutes on two CPU cores.
# tests/test_readme.py and tests/test_docs_pictures.py fail when a committed copy differs.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
step() { echo "== $*" >&2; "$PYTHON" "$@"; }
step scripts/readme_outputs.py
step benchmarks/training_curves.py --from-results
step benchmarks/shapes_tables.py --sections uip2p --from-runs
step benchmarks/shapes_editing.py
step benchmarks/shapes_quality.py --threads 1 --num-t2i 100 --num-reconstruction 24 --train-scenes 200000
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  step scripts/app_screenshot.py  # the app's screenshot, taken in headless Chromium
else
  echo "== skipped scripts/app_screenshot.py: needs chromium and chromium-driver (Debian packages)" >&2
fi
