#!/usr/bin/env bash
# A shipped Shapes editor (ip2p or uip2p) as a whole pipeline folder in float32, with the components it
# shares with the other shipped models copied in: the form train_uip2p's --pretrained_model_name_or_path reads.
#   bash scripts/save-shapes-editor.sh ip2p work/ip2p-step4000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
.venv/bin/python - "$1" "$2" <<'PY'
import sys

import torch

from diffusers_uip2p.shapes.pretrained import load_shapes_editor

load_shapes_editor(sys.argv[1], dtype=torch.float32).save_pretrained(sys.argv[2])
print(f"wrote {sys.argv[2]}")
PY
