"""Edit records for UIP2P training: read from JSONL, 🤗 datasets or tar shards, turned into tensors.

A record holds an ``image``, its ``input_caption``, an ``edit_instruction``, the ``edited_caption`` and the
``reverse_instruction`` that undoes the edit (ERC needs all four texts); ``edited_image`` is optional and only
supervised training needs it. `open_edit_dataset` reads any of the supported sources, `collate_edit_records`
batches the items, and `write_jsonl_records` writes records that `open_edit_dataset` reads back.

Bad records are never dropped silently: each is reported with its index (and ``file:line`` or ``shard:key``)
and then skipped or raised, as ``on_bad_record`` asks. Text fields are checked when the dataset opens; images
are opened lazily, so an unreadable image is reported when its record is first read.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import PIL.Image
import torch

from .records import (BAD_RECORD_POLICIES, EDITED_IMAGE, RECORD_FIELDS, TEXT_FIELDS, BadRecord, RecordOptions,
                      make_item, report_bad_record, text_problem)
from .shards import EditShardDataset, expand_braces


class EditRecordDataset(torch.utils.data.Dataset):
    """Map-style records; ``__getitem__`` returns None for a record skipped because its image is unreadable.

    Split it across processes with the sampler (accelerate's ``prepare`` does); ``set_epoch`` reseeds random
    crops and flips (with persistent DataLoader workers, each worker keeps the epoch it started with)."""

    def __init__(self, rows: list[tuple[int, str, dict, object, object]], options: RecordOptions, base: Path | None,
                 images=None):
        self._rows, self._options, self._base, self._images = rows, options, base, images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, position: int) -> dict | None:
        index, where, texts, image, edited = self._rows[position]
        try:
            if self._images is not None:  # a 🤗 dataset: images are decoded only now
                image, edited = self._images(index)
            return make_item(texts, image, edited, index, where, self.epoch, self._options, self._base)
        except BadRecord as error:
            report_bad_record(BadRecord(f"{where}: {error}"), self._options)
            return None


def _check_rows(candidates, options: RecordOptions) -> list:
    """Keep the rows whose texts are complete, reporting the others; require edited images up front."""
    rows, skipped = [], 0
    for index, where, texts, image, edited in candidates:
        if options.require_edited and edited is None:
            raise ValueError(f"Supervised mode (require_edited=True) needs edited images; {where} has none.")
        problem = text_problem(texts) or (None if image is not None else f"missing {'image'!r}")
        if problem:
            skipped += 1
            report_bad_record(BadRecord(f"{where}: {problem}"), options)
        else:
            rows.append((index, where, texts, image, edited))
    if not rows:
        raise ValueError(f"No usable records: all {skipped} records are bad (see the warnings above)." if skipped
                         else "`source` holds no records.")
    return rows


def _jsonl_rows(path: Path, names: dict, max_records: int | None, options: RecordOptions):
    """(index, where, texts, image, edited) of each record of a JSONL file, bad JSON reported as a bad record."""
    lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
    for index, (number, line) in enumerate(lines[:max_records]):
        where = f"record {index} ({path.name}:{number})"
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as error:
            report_bad_record(BadRecord(f"{where}: not a JSON record: {error}"), options)
            continue
        texts = {field: record.get(names[field]) for field in TEXT_FIELDS}
        yield index, where, texts, record.get(names["image"]) or None, record.get(names[EDITED_IMAGE]) or None


def _hf_dataset(dataset, names: dict, max_records: int | None, options: RecordOptions) -> EditRecordDataset:
    """Rows of a 🤗 ``Dataset``; its columns are checked up front, its images decoded lazily."""
    import datasets

    missing = [f"{names[f]!r} (for {f!r})" for f in RECORD_FIELDS if names[f] not in dataset.column_names]
    if options.require_edited and names[EDITED_IMAGE] not in dataset.column_names:
        missing.append(f"{names[EDITED_IMAGE]!r} (supervised mode needs edited images)")
    if missing:
        raise ValueError(f"The dataset has no column {', '.join(missing)}; its columns are "
                         f"{dataset.column_names}. Map them with `columns`, e.g. columns={{'edit_instruction': "
                         f"'edit_prompt'}}.")
    if max_records is not None:
        dataset = dataset.select(range(min(max_records, len(dataset))))
    image_columns = [names[f] for f in ("image", EDITED_IMAGE) if names[f] in dataset.column_names]
    raw = dataset.select_columns(image_columns)
    for column in image_columns:  # paths and bytes only: presence is checked without decoding
        if isinstance(raw.features[column], datasets.Image):
            raw = raw.cast_column(column, datasets.Image(decode=False))
    present = {column: list(raw[column]) for column in image_columns}
    texts = {field: list(dataset[names[field]]) for field in TEXT_FIELDS}
    has_edited = present.get(names[EDITED_IMAGE], [None] * len(dataset))
    candidates = ((i, f"record {i}", {f: texts[f][i] for f in TEXT_FIELDS}, present[names["image"]][i] or None,
                   has_edited[i] or None) for i in range(len(dataset)))
    images = _DecodedImages(dataset.select_columns(image_columns), names["image"], names[EDITED_IMAGE])
    return EditRecordDataset(_check_rows(candidates, options), options, None, images)


class _DecodedImages:
    """(image, edited image or None) of a 🤗 dataset's row, decoded on demand; picklable for DataLoader workers."""

    def __init__(self, images, image_column: str, edited_column: str):
        self.images, self.image_column, self.edited_column = images, image_column, edited_column

    def __call__(self, index: int):
        try:
            row = self.images[index]
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            raise BadRecord(f"unreadable image: {error}") from error
        return row[self.image_column], row.get(self.edited_column)


def _check_arguments(resolution, on_bad_record, columns, rank, world_size, max_records, shuffle_buffer) -> dict:
    """Clear errors for bad arguments; the field -> column names."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"`resolution` must be a positive integer, got {resolution!r}.")
    if on_bad_record not in BAD_RECORD_POLICIES:
        raise ValueError(f"`on_bad_record` must be one of {BAD_RECORD_POLICIES}, got {on_bad_record!r}.")
    if not isinstance(world_size, int) or world_size < 1 or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"Need 0 <= `rank` < `world_size`, got rank={rank!r}, world_size={world_size!r}.")
    if max_records is not None and (not isinstance(max_records, int) or max_records < 1):
        raise ValueError(f"`max_records` must be None or a positive integer, got {max_records!r}.")
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
        raise ValueError(f"`shuffle_buffer` must be a non-negative integer, got {shuffle_buffer!r}.")
    unknown = set(columns or {}) - {*RECORD_FIELDS, EDITED_IMAGE}
    if unknown:
        raise ValueError(f"`columns` maps unknown fields {sorted(unknown)}; the fields are "
                         f"{[*RECORD_FIELDS, EDITED_IMAGE]}.")
    return {field: (columns or {}).get(field, field) for field in (*RECORD_FIELDS, EDITED_IMAGE)}


def _pick_split(dataset, split: str):
    """A ``Dataset`` from a ``DatasetDict`` (by ``split``) or the ``Dataset`` itself."""
    if hasattr(dataset, "column_names") and not isinstance(dataset.column_names, dict):
        return dataset
    if split not in dataset:
        raise ValueError(f"`split` {split!r} is not in the dataset; its splits are {list(dataset)}.")
    return dataset[split]


def open_edit_dataset(source, *, resolution: int, require_edited: bool = False, on_bad_record: str = "skip",
                      columns: dict | None = None, split: str = "train", rank: int = 0, world_size: int = 1,
                      seed: int = 0, center_crop: bool = True, random_flip: bool = False,
                      max_records: int | None = None, shuffle_buffer: int = 0):
    """Edit records from ``source`` as a map-style dataset, or an ``IterableDataset`` for tar shards.

    ``source``: a JSONL file or a folder holding ``records.jsonl`` (image paths relative to it); a folder saved
    with ``save_to_disk``; a ``datasets.Dataset``/``DatasetDict``; a list of ``.tar`` shards or a brace pattern
    (``data/shard-{000..009}.tar``); otherwise a Hub dataset name. ``columns`` maps field names to the
    source's (``{"image": "input_image", "edit_instruction": "edit_prompt"}``). ``rank``/``world_size`` and
    ``shuffle_buffer`` apply to shards; ``max_records`` keeps the first records (per rank for shards).
    """
    names = _check_arguments(resolution, on_bad_record, columns, rank, world_size, max_records, shuffle_buffer)
    options = RecordOptions(resolution, require_edited, on_bad_record, center_crop, random_flip, seed)
    source = str(source) if isinstance(source, Path) else source
    if isinstance(source, (list, tuple)) or (isinstance(source, str) and re.search(r"\.tar(\}|$)", source)):
        items = [source] if isinstance(source, str) else list(source)
        if not all(isinstance(item, (str, Path)) for item in items):
            raise TypeError("`source` as a list must hold tar shard paths.")

        shards = [path for item in items for path in expand_braces(str(item))]
        missing = [path for path in shards if not Path(path).is_file()]
        if not shards or missing:
            raise ValueError(f"`source` names missing tar shards: {missing[:5] or 'none given'}.")
        return EditShardDataset(shards, options, names, rank, world_size, shuffle_buffer, max_records)
    if not isinstance(source, str):  # a 🤗 Dataset or DatasetDict object
        if not hasattr(source, "column_names"):
            raise TypeError("`source` must be a path, a list of tar shards, a Hub dataset name or a "
                            f"datasets.Dataset, got {type(source).__name__}.")
        return _hf_dataset(_pick_split(source, split), names, max_records, options)
    path = Path(source)
    if path.is_dir() and (path / "records.jsonl").is_file():
        path = path / "records.jsonl"
    if path.is_file():
        rows = _check_rows(_jsonl_rows(path, names, max_records, options), options)
        return EditRecordDataset(rows, options, path.parent)
    import datasets

    if path.is_dir():
        return _hf_dataset(_pick_split(datasets.load_from_disk(str(path)), split), names, max_records, options)
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(source)) or path.suffix in (".jsonl", ".json", ".tar"):
        raise ValueError(f"`source` {str(source)!r} does not exist (expected a JSONL file, a folder holding "
                         "records.jsonl or a saved dataset, tar shards, or a Hub dataset name).")
    return _hf_dataset(datasets.load_dataset(str(source), split=split), names, max_records, options)


def collate_edit_records(items: list[dict | None]) -> dict:
    """One batch: tensors stacked, texts listed, skipped (None) items dropped; {} when none is left.

    ``edited_pixel_values`` is included only when every item has it."""
    items = [item for item in items if item is not None]
    if not items:
        return {}
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in items])}
    if all("edited_pixel_values" in item for item in items):
        batch["edited_pixel_values"] = torch.stack([item["edited_pixel_values"] for item in items])
    batch.update({field: [item[field] for item in items] for field in TEXT_FIELDS})
    batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
    return batch


def write_jsonl_records(records, folder: str | Path) -> Path:
    """Write ``records.jsonl`` and ``images/`` into ``folder``; return the JSONL path.

    PIL images are saved as PNG; image paths are copied (a path shared by several records is copied once).
    Paths in the JSONL are relative to ``folder``, so the folder can be moved as a whole."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    copied: dict[Path, str] = {}
    path = folder / "records.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for i, original in enumerate(records):
            record = dict(original)
            for field, suffix in (("image", ""), (EDITED_IMAGE, "_edited")):
                value = record.get(field)
                if isinstance(value, PIL.Image.Image):
                    record[field] = f"images/{i:06d}{suffix}.png"
                    value.save(folder / record[field])
                elif isinstance(value, (str, Path)):
                    value = Path(value).resolve()
                    if value not in copied:
                        copied[value] = f"images/{i:06d}{suffix}{value.suffix.lower()}"
                        shutil.copyfile(value, folder / copied[value])
                    record[field] = copied[value]
                elif field == "image" or value is not None:
                    raise TypeError(f"records[{i}][{field!r}] must be a PIL image or a path, got "
                                    f"{type(value).__name__}.")
            try:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
            except TypeError as error:
                raise TypeError(f"records[{i}] holds a value JSON cannot store: {error}") from error
    return path
