#!/usr/bin/env bash
# Runs the whole test suite offline on the CPU (sets up .venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/python -m pytest -q "$@"
