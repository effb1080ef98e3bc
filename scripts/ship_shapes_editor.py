"""Ships a trained Shapes instruction editor: its UNet, stored in float16 (it loads as float32), replaces
``src/diffusers_uip2p/shapes/models/NAME/unet``, and the run's model card replaces the shipped one. The
shipped folder keeps sharing the text-to-image pipeline's frozen VAE, text encoder and tokenizer, which
the run trained with unchanged. Measure the candidate on validation first (`benchmarks/editor_comparison.py`).

    .venv/bin/python scripts/ship_shapes_editor.py work/ip2p-supervised-v2 ip2p
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "src" / "diffusers_uip2p" / "shapes" / "models"
STORAGE = """## Storage

The UNet's weights are stored in float16 (half the bytes) and load as float32, as they were trained. The
VAE, text encoder and tokenizer are the text-to-image pipeline's (`shared_components.json`).

"""


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a finished training run's output folder (with unet/ and README.md)")
    parser.add_argument("name", choices=("ip2p", "uip2p"))
    args = parser.parse_args(argv)
    shipped = MODELS / args.name
    config = json.loads((shipped / "unet" / "config.json").read_text())
    unet = UNet2DConditionModel.from_pretrained(args.run / "unet", torch_dtype=torch.float16)
    trained = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    if trained != {k: v for k, v in config.items() if not k.startswith("_")}:
        raise SystemExit(f"{args.run / 'unet'} is not the shipped {args.name} UNet's architecture")
    unet.save_pretrained(shipped / "unet")
    (shipped / "unet" / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    card = (args.run / "README.md").read_text()
    (shipped / "README.md").write_text(card.replace("## Training\n", STORAGE + "## Training\n", 1))
    print(f"shipped {args.run} as shapes:{args.name}")


if __name__ == "__main__":
    main()
