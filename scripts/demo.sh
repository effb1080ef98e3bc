#!/usr/bin/env bash
# The library's main job: exact inversion and reconstruction of the bundled sample image (sets up .venv on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/diffusers-uip2p reconstruct --output outputs/demo "$@"
