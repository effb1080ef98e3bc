#!/usr/bin/env bash
# The library's main job: edit a bundled Shapes scene by instruction with the shipped UIP2P model (trained
# without edited images), check the edit by reversing it, and show before | after | reversed (sets up .venv
# on first use). Extra arguments go to `diffusers-uip2p edit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/diffusers-uip2p edit three-objects "make the red triangle blue" \
  --reverse "make the blue triangle red" --candidates 4 --output outputs/demo "$@"
