"""Train/validation/test splits of Shapes-world edits, and their export as JSONL + PNG or a 🤗 dataset.

Record ``i`` of a split depends only on the split's seed and ``i`` (not on how many records are asked
for), so a bigger split extends a smaller one. The training split never uses a held-out phrasing or a
held-out (colour, shape) pair; validation and test use everything and flag what training could not see.

Fields, in the format the UIP2P training reads: ``image``, ``input_caption``, ``edit_instruction``,
``edited_caption``, ``reverse_instruction``; for evaluation only: ``edited_image`` (the true result),
``category``, ``edit_kind`` and ``held_out``.

    python -m diffusers_uip2p.shapes.dataset --split train --num-records 1000 --output data/shapes-train
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import PIL.Image

from .edits import HELD_OUT_PAIRS, Edit, random_edit
from .language import parse_caption
from .scenes import Scene, random_scene, render

SPLIT_SEEDS = {"train": 0, "validation": 1, "test": 2}
TEXT_FIELDS = ("input_caption", "edit_instruction", "edited_caption", "reverse_instruction", "category",
               "edit_kind")


def check_split(split: str) -> str:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"`split` must be one of {', '.join(SPLIT_SEEDS)}, got {split!r}.")
    return split


def _rng(split: str, index: int) -> random.Random:
    return random.Random(f"shapes-{check_split(split)}-{index}")


def split_scenes(split: str, num_scenes: int, start: int = 0) -> list[Scene]:
    """Scenes of a split, for pre-training the base models (VAE, CLIP, text-to-image).

    Base models stand in for a broadly pre-trained Stable Diffusion, so every split's scenes may hold any
    (colour, shape) pair; only the *edit* training split holds pairs out."""
    return [random_scene(_rng(split, i)) for i in range(start, start + num_scenes)]


def split_edits(split: str, num_records: int, start: int = 0) -> list[Edit]:
    """Edits of a split: ``train`` without held-out phrasings and pairs, the others with everything."""
    edits = []
    for i in range(start, start + num_records):
        rng = _rng(split, i)
        training = split == "train"
        scene = random_scene(rng, exclude=HELD_OUT_PAIRS if training else frozenset())
        edits.append(random_edit(scene, rng, held_out=not training))
    return edits


def edit_record(edit: Edit) -> dict:
    """One record (images as PIL) in the training format."""
    return {
        "image": render(edit.source), "input_caption": edit.input_caption, "edit_instruction": edit.instruction,
        "edited_caption": edit.edited_caption, "reverse_instruction": edit.reverse_instruction,
        "edited_image": render(edit.target), "category": edit.category, "edit_kind": edit.kind,
        "held_out": edit.held_out,
    }


def export_jsonl(edits: list[Edit], folder: str | Path) -> Path:
    """Write ``records.jsonl`` and ``images/<i>.png`` / ``images/<i>_edited.png``; return the JSONL path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    path = folder / "records.jsonl"
    with path.open("w") as out:
        for i, edit in enumerate(edits):
            record = edit_record(edit)
            for field, suffix in (("image", ""), ("edited_image", "_edited")):
                name = f"images/{i:06d}{suffix}.png"
                record[field].save(folder / name)
                record[field] = name
            out.write(json.dumps(record) + "\n")
    return path


def load_jsonl(path: str | Path) -> list[dict]:
    """Read an exported split back: records with PIL images."""
    path = Path(path)
    records = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for field in ("image", "edited_image"):
            with PIL.Image.open(path.parent / record[field]) as image:
                record[field] = image.convert("RGB")
        records.append(record)
    return records


def to_hf_dataset(edits: list[Edit]):
    """The edits as a 🤗 ``datasets.Dataset`` with ``Image`` columns (``pip install datasets``)."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError("to_hf_dataset needs the `datasets` package: pip install 'diffusers-uip2p[datasets]'.") \
            from error
    features = datasets.Features({
        "image": datasets.Image(), "edited_image": datasets.Image(), "held_out": datasets.Value("bool"),
        **{field: datasets.Value("string") for field in TEXT_FIELDS},
    })
    records = [edit_record(edit) for edit in edits]
    return datasets.Dataset.from_list(records, features=features)


def scene_of(record: dict) -> Scene:
    """The input scene of a record (read back from its exact caption)."""
    return parse_caption(record["input_caption"])


def main(argv=None):
    parser = argparse.ArgumentParser(description="Export a split of Shapes-world edits.")
    parser.add_argument("--split", choices=sorted(SPLIT_SEEDS), required=True)
    parser.add_argument("--num-records", type=int, required=True)
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--format", choices=("jsonl", "datasets"), default="jsonl",
                        help="JSONL + PNG, or a 🤗 dataset saved with save_to_disk")
    args = parser.parse_args(argv)
    edits = split_edits(args.split, args.num_records)
    if args.format == "jsonl":
        print(export_jsonl(edits, args.output))
    else:
        to_hf_dataset(edits).save_to_disk(args.output)
        print(args.output)


if __name__ == "__main__":
    main()
