"""One edit record, from its fields to a training item: the fields, their checks, how a bad record is
reported, and the image → tensor transform. Every reader (`data` for JSONL and 🤗 datasets, `shards` for
tar shards) builds on this module, so no reader depends on another."""

from __future__ import annotations

import io
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch

RECORD_FIELDS = ("image", "input_caption", "edit_instruction", "edited_caption", "reverse_instruction")
TEXT_FIELDS = RECORD_FIELDS[1:]
EDITED_IMAGE = "edited_image"
BAD_RECORD_POLICIES = ("skip", "error")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class BadRecord(ValueError):
    """A record that cannot be used; the message says where it is and what is wrong."""


@dataclass(frozen=True)
class RecordOptions:
    resolution: int
    require_edited: bool
    on_bad_record: str
    center_crop: bool
    random_flip: bool
    seed: int


def report_bad_record(error: BadRecord, options: RecordOptions) -> None:
    """Raise the problem (``on_bad_record="error"``) or warn that the record is skipped."""
    if options.on_bad_record == "error":
        raise ValueError(f"{error} (pass on_bad_record='skip' to skip bad records)")
    warnings.warn(f"Skipping {error}", stacklevel=3)


def text_problem(record: dict) -> str | None:
    """What is wrong with a record's text fields, or None: each must be a non-empty string."""
    for field in TEXT_FIELDS:
        value = record.get(field)
        if value is None:
            return f"missing {field!r}"
        if not isinstance(value, str):
            return f"{field!r} must be a string, got {type(value).__name__}"
        if not value.strip():
            return f"empty {field!r}"
    return None


def load_image(value, base: Path | None = None) -> PIL.Image.Image:
    """An RGB PIL image from a PIL image, a path (relative to ``base``), bytes or a 🤗 ``{bytes, path}`` dict."""
    if isinstance(value, dict) and (value.get("bytes") or value.get("path")):
        return load_image(value.get("bytes") or value["path"], base)
    if isinstance(value, PIL.Image.Image):
        return value.convert("RGB")
    if not isinstance(value, (str, Path, bytes)):
        raise BadRecord(f"an image must be a PIL image, a path or bytes, got {type(value).__name__}")
    try:
        if isinstance(value, bytes):
            return PIL.Image.open(io.BytesIO(value)).convert("RGB")
        with PIL.Image.open(base / value if base is not None else value) as image:
            return image.convert("RGB")
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        name = "<bytes>" if isinstance(value, bytes) else str(value)
        raise BadRecord(f"unreadable image {name!r}: {error}") from error


def to_pixel_values(image: PIL.Image.Image, resolution: int, crop: tuple[float, float] = (0.5, 0.5),
                    flip: bool = False) -> torch.Tensor:
    """[3, R, R] float32 in [-1, 1]: shorter side resized to R, an R×R crop at ``crop`` (fractions of the slack
    along x and y; 0.5 is the centre), then an optional horizontal flip. Aspect ratio is kept, never squashed."""
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    if size != image.size:
        image = image.resize(size, PIL.Image.Resampling.BICUBIC)
    left, top = round((size[0] - resolution) * crop[0]), round((size[1] - resolution) * crop[1])
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip:
        image = image.transpose(PIL.Image.Transpose.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    return torch.from_numpy(array / 127.5 - 1.0)


def make_item(texts: dict, image, edited, index: int, where: str, epoch: int, options: RecordOptions,
               base: Path | None = None) -> dict:
    """The training item of one record; both images get the same crop and flip (seeded by record and epoch)."""
    if edited is None and options.require_edited:  # a mode/data mismatch, whatever on_bad_record says
        raise ValueError(f"Supervised mode (require_edited=True) needs edited images; {where} has none.")
    rng = random.Random(f"{options.seed}:{epoch}:{where}")
    crop = (0.5, 0.5) if options.center_crop else (rng.random(), rng.random())
    flip = options.random_flip and rng.random() < 0.5
    item = {"pixel_values": to_pixel_values(load_image(image, base), options.resolution, crop, flip)}
    if edited is not None:
        item["edited_pixel_values"] = to_pixel_values(load_image(edited, base), options.resolution, crop, flip)
    return {**item, **{field: texts[field] for field in TEXT_FIELDS}, "index": index}
