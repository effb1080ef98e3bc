"""Readers for local copies of the editing benchmarks both papers report on, and the Shapes world.

The user downloads the benchmarks; nothing here touches the network. Each reader checks the folder when it
opens it (listing every missing file or column at once) and loads an item only when asked, so a process of
a sharded run reads only its own share.

* `PieBench`: a PIE-Bench folder, ``mapping_file.json`` plus ``annotation_images/``. Prompts lose their
  ``[ ]`` brackets; masks are PIE-Bench's RLE over 512×512 with the 1-pixel border forced into the edit.
* `EmuEdit`: Emu Edit's 🤗 dataset (``facebook/emu_edit_test_set``) saved with ``save_to_disk`` or as its
  parquet files; columns ``image``, ``instruction``, ``input_caption``, ``output_caption``, ``task``, ``idx``.
* `MagicBrush`: MagicBrush's 🤗 dataset (``osunlp/MagicBrush``) in either form; columns ``img_id``,
  ``turn_index``, ``source_img``, ``instruction``, ``target_img``. Single-turn: every turn is edited from its
  own ground-truth input. Multi-turn: a session's turns are chained, each editing the previous output.
* `ShapesBenchmark`: a split of Shapes-world edits, generated (no folder), judged by the Shapes evaluator.

Every item is an `EditItem`: the image to edit and one `EditTurn` per edit (several only for MagicBrush's
multi-turn sessions).
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
import torch

from ..checks import check_number
from .metrics import decode_pie_mask, strip_brackets

PIE_MASK_SIZE = 512  # PIE-Bench's masks are run lengths over a 512×512 image
PIE_EDITING_TYPES = {
    "0": "random", "1": "change object", "2": "add object", "3": "delete object", "4": "change content",
    "5": "change pose", "6": "change color", "7": "change material", "8": "change background", "9": "change style",
}
PIE_FIELDS = ("image_path", "original_prompt", "editing_prompt", "editing_instruction", "editing_type_id", "mask")
EMU_EDIT_COLUMNS = ("image", "instruction", "input_caption", "output_caption", "task", "idx")
MAGICBRUSH_COLUMNS = ("img_id", "turn_index", "source_img", "instruction", "target_img")
_LISTED = 10  # how many missing files an error names before summing up the rest


@dataclass
class EditTurn:
    """One edit and what scores it.

    Args:
        reference: the image the metrics compare the output with: the input image (PIE-Bench, Emu Edit,
            Shapes) or the ground-truth edit (MagicBrush).
        instruction: for instruction-based editors (InstructPix2Pix, UIP2P).
        source_prompt, target_prompt: for prompt-based editors (`AutoEditPipeline`), brackets stripped.
        source_caption, target_caption: the captions CLIP metrics read (Emu Edit's input/output captions,
            MagicBrush's local output caption when the dataset has one).
        mask: [1, H, W] float, 1 = the region the edit may change (PIE-Bench).
    """

    reference: PIL.Image.Image
    instruction: str | None = None
    source_prompt: str | None = None
    target_prompt: str | None = None
    source_caption: str | None = None
    target_caption: str | None = None
    mask: torch.Tensor | None = None


@dataclass
class EditItem:
    """The image to edit, its turns (each later turn edits the previous turn's output) and its category."""

    key: str
    image: PIL.Image.Image
    turns: list[EditTurn]
    category: str | None = None
    extra: dict = field(default_factory=dict)  # benchmark fields worth keeping in the per-item record


def _listed(names: list[str]) -> str:
    """The first names of a long list, then how many more."""
    return ", ".join(names[:_LISTED]) + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _missing_error(what: str, folder: Path, missing: list[str], hint: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} at {folder} is incomplete: missing {_listed(missing)}. {hint}")


def _as_pil(value, column: str) -> PIL.Image.Image:
    """A dataset cell holding an image (PIL, or the ``{"bytes", "path"}`` dict of an undecoded column) as RGB."""
    if isinstance(value, dict) and value.get("bytes") is not None:
        value = PIL.Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, dict) and value.get("path"):
        value = PIL.Image.open(value["path"])
    if not isinstance(value, PIL.Image.Image):
        raise TypeError(f"Column {column!r} must hold images, got {type(value).__name__}.")
    return value.convert("RGB")


class PieBench:
    """PIE-Bench (`cure-lab/PnPInversion`): ``mapping_file.json`` and ``annotation_images/``.

    Args:
        path: the folder holding both.
        mask_size: side of the square the RLE masks run over; PIE-Bench's is 512, and every image must
            have that size (an image of another size would be scored against a mask that does not fit it).
    """

    name = "pie-bench"

    def __init__(self, path: str | Path, mask_size: int = PIE_MASK_SIZE):
        self.path, self.mask_size = Path(path), mask_size
        mapping = self.path / "mapping_file.json"
        missing = [name for name in ("mapping_file.json", "annotation_images/") if not (self.path / name).exists()]
        if missing:
            raise _missing_error("The PIE-Bench folder", self.path, missing,
                                 "Download PIE-Bench (see cure-lab/PnPInversion) and pass its folder as `path`.")
        self.entries = json.loads(mapping.read_text())
        if not isinstance(self.entries, dict) or not self.entries:
            raise ValueError(f"{mapping} must map keys to entries, as PIE-Bench's mapping_file.json does.")
        self.keys = sorted(self.entries)
        self._check()

    def _check(self) -> None:
        """Every entry has PIE-Bench's fields, every image exists and has the masks' size."""
        incomplete = [f"{key} (no {', '.join(f for f in PIE_FIELDS if f not in entry)})"
                      for key, entry in self.entries.items() if any(f not in entry for f in PIE_FIELDS)]
        if incomplete:
            raise ValueError(f"mapping_file.json entries lack fields: {_listed(incomplete)}.")
        images = self.path / "annotation_images"
        missing = [f"annotation_images/{e['image_path']}" for e in self.entries.values()
                   if not (images / e["image_path"]).is_file()]
        if missing:
            raise _missing_error("The PIE-Bench folder", self.path, missing,
                                 "Every image_path of mapping_file.json must exist under annotation_images/.")
        wrong = []
        for key in self.keys:
            with PIL.Image.open(images / self.entries[key]["image_path"]) as image:
                if image.size != (self.mask_size, self.mask_size):
                    wrong.append(f"{key} ({image.width}×{image.height})")
        if wrong:
            raise ValueError(f"PIE-Bench masks are {self.mask_size}×{self.mask_size} (`mask_size`), but these "
                             f"images have another size: {_listed(wrong)}.")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> EditItem:
        key = self.keys[index]
        entry = self.entries[key]
        with PIL.Image.open(self.path / "annotation_images" / entry["image_path"]) as image:
            image = image.convert("RGB")
        mask = decode_pie_mask(entry["mask"], height=self.mask_size, width=self.mask_size)
        turn = EditTurn(reference=image, instruction=entry["editing_instruction"],
                        source_prompt=strip_brackets(entry["original_prompt"]),
                        target_prompt=strip_brackets(entry["editing_prompt"]), mask=mask[None])
        return EditItem(key, image, [turn], category=str(entry["editing_type_id"]),
                        extra={"image_path": entry["image_path"]})

    def describe(self) -> dict:
        return {"benchmark": self.name, "dataset": str(self.path.resolve()), "mask_size": self.mask_size,
                "items": len(self)}


def _parquet_splits(folder: Path) -> dict[str, list[Path]]:
    """Parquet files by split, named as the Hub names them (``data/<split>-00000-of-00002.parquet``)."""
    splits: dict[str, list[Path]] = {}
    for file in sorted(folder.rglob("*.parquet")):
        match = re.match(r"(.+?)-\d+-of-\d+$", file.stem)
        splits.setdefault(match.group(1) if match else file.stem, []).append(file)
    return splits


def load_dataset_split(path: str | Path, split: str | None, columns: tuple[str, ...], benchmark: str):
    """A 🤗 dataset saved with ``save_to_disk`` (a Dataset or a DatasetDict) or as parquet files, one split of it,
    checked for ``columns``. ``split`` may be left out when there is only one."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError(f"Reading {benchmark} needs the `datasets` package: "
                          "pip install 'diffusers-uip2p[datasets]'.") from error
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{benchmark}: no folder at {path} (`data`).")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {split: loaded}
    else:
        splits = _parquet_splits(path)
        if not splits:
            raise _missing_error(f"The {benchmark} folder", path, ["dataset_dict.json or state.json", "*.parquet"],
                                 "Save the 🤗 dataset with `save_to_disk`, or download its parquet files, into it.")
    if split is None and len(splits) > 1:
        raise ValueError(f"{path} holds the splits {sorted(splits)}; choose one with `split`.")
    split = next(iter(splits)) if split is None else split
    if split not in splits:
        raise ValueError(f"{path} has no split {split!r}; it holds {sorted(splits)}.")
    dataset = splits[split]
    if isinstance(dataset, list):
        dataset = datasets.Dataset.from_parquet([str(f) for f in dataset])
    missing = [c for c in columns if c not in dataset.column_names]
    if missing:
        raise ValueError(f"The {benchmark} dataset at {path} lacks the columns {missing} "
                         f"(it has {dataset.column_names}).")
    return dataset, split


class EmuEdit:
    """Emu Edit's test set (or validation set) as its 🤗 dataset. Its ``task`` is the category.

    The metrics compare the output with the input image; CLIP metrics read ``input_caption`` and
    ``output_caption``. Prompt-based editors edit from the input caption to the output caption.
    """

    name = "emu-edit"

    def __init__(self, path: str | Path, split: str | None = None):
        self.path = Path(path)
        self.dataset, self.split = load_dataset_split(path, split, EMU_EDIT_COLUMNS, "Emu Edit")
        self.keys = [str(i) for i in self.dataset["idx"]]
        if len(set(self.keys)) != len(self.keys):
            raise ValueError(f"The Emu Edit dataset at {path} repeats values of its `idx` column; give one split.")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> EditItem:
        row = self.dataset[index]
        image = _as_pil(row["image"], "image")
        turn = EditTurn(reference=image, instruction=row["instruction"], source_prompt=row["input_caption"],
                        target_prompt=row["output_caption"], source_caption=row["input_caption"],
                        target_caption=row["output_caption"])
        return EditItem(self.keys[index], image, [turn], category=row["task"])

    def describe(self) -> dict:
        return {"benchmark": self.name, "dataset": str(self.path.resolve()), "split": self.split, "items": len(self)}



class MagicBrush:
    """MagicBrush as its 🤗 dataset, single-turn (``multi_turn=False``: every turn from its ground-truth input,
    MagicBrush's "all turns" setting) or multi-turn (each session chained from its first input).

    The metrics compare each output with that turn's ground truth (``target_img``). CLIP-T reads the local
    caption of the edited image from an optional ``output_caption`` column: the HF dataset has none, and
    MagicBrush's paper used local, not global, captions (OSU-NLP-Group/MagicBrush#17).
    """

    name = "magicbrush"

    def __init__(self, path: str | Path, split: str | None = None, multi_turn: bool = False):
        self.path, self.multi_turn = Path(path), multi_turn
        self.dataset, self.split = load_dataset_split(path, split, MAGICBRUSH_COLUMNS, "MagicBrush")
        self.has_captions = "output_caption" in self.dataset.column_names
        sessions: dict[str, list[tuple[int, int]]] = {}
        for row, (img_id, turn) in enumerate(zip(self.dataset["img_id"], self.dataset["turn_index"], strict=True)):
            sessions.setdefault(str(img_id), []).append((int(turn), row))
        for img_id, turns in sessions.items():
            turns.sort()
            if [t for t, _ in turns] != list(range(1, len(turns) + 1)):
                raise ValueError(f"MagicBrush session {img_id} has turns {[t for t, _ in turns]}; "
                                 "expected 1, 2, ... without gaps.")
        if multi_turn:
            self.keys = sorted(sessions, key=natural_key)
            self.rows = [[row for _, row in sessions[key]] for key in self.keys]
        else:
            ordered = [(img_id, turn, row) for img_id in sorted(sessions, key=natural_key)
                       for turn, row in sessions[img_id]]
            self.keys = [f"{img_id}-{turn}" for img_id, turn, _ in ordered]
            self.rows = [[row] for _, _, row in ordered]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> EditItem:
        rows = [self.dataset[r] for r in self.rows[index]]
        turns = [EditTurn(reference=_as_pil(row["target_img"], "target_img"), instruction=row["instruction"],
                          target_caption=row.get("output_caption")) for row in rows]
        extra = {"img_id": str(rows[0]["img_id"])}
        if not self.multi_turn:
            extra["turn_index"] = int(rows[0]["turn_index"])
        return EditItem(self.keys[index], _as_pil(rows[0]["source_img"], "source_img"), turns, extra=extra)

    def describe(self) -> dict:
        return {"benchmark": self.name, "dataset": str(self.path.resolve()), "split": self.split,
                "multi_turn": self.multi_turn, "items": len(self),
                "clip_t_captions": "output_caption column" if self.has_captions else None}


def natural_key(text: str):
    """Sort key that orders "9" before "10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class ShapesBenchmark:
    """Shapes-world edits of a split (``test`` by default: edits no training run saw), with exact captions.
    The Shapes evaluator judges each output against the true edited scene."""

    name = "shapes"

    def __init__(self, split: str = "test", num_edits: int = 50):
        from ..shapes.dataset import check_split

        check_number(num_edits, "num_edits", low=1, integer=True)
        self.split, self.num_edits = check_split(split), num_edits
        self.keys = [f"{split}-{i:05d}" for i in range(num_edits)]

    def __len__(self) -> int:
        return self.num_edits

    def __getitem__(self, index: int) -> EditItem:
        from ..shapes import render
        from ..shapes.dataset import split_edits

        if not 0 <= index < self.num_edits:
            raise IndexError(f"edit {index} is outside this benchmark's {self.num_edits} edits.")
        edit = split_edits(self.split, 1, start=index)[0]  # each edit is drawn from its own index: made lazily
        image = render(edit.source)
        turn = EditTurn(reference=image, instruction=edit.instruction, source_prompt=edit.input_caption,
                        target_prompt=edit.edited_caption, source_caption=edit.input_caption,
                        target_caption=edit.edited_caption)
        return EditItem(self.keys[index], image, [turn], category=edit.category, extra={"edit_kind": edit.kind})

    def describe(self) -> dict:
        return {"benchmark": self.name, "dataset": "generated: diffusers_uip2p.shapes.dataset.split_edits",
                "split": self.split}  # no item count: a larger run extends a smaller one (record i depends on i)

