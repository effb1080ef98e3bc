"""Edit records streamed from webdataset-style tar shards, so that CC3M/CC12M-scale data never has to fit on
disk or in memory at once. Read with the standard library's `tarfile`; no webdataset dependency."""

from __future__ import annotations

import itertools
import json
import random
import re
import tarfile
from pathlib import Path

import torch

from .records import IMAGE_EXTENSIONS, TEXT_FIELDS, BadRecord, RecordOptions, make_item, report_bad_record, text_problem


def expand_braces(pattern: str) -> list[str]:
    """``shard-{000..002}.tar`` → three paths (zero padding kept); ``{a,b}`` lists alternatives."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if not match:
        return [pattern]
    head, tail, body = pattern[: match.start()], pattern[match.end():], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        options = [str(n).zfill(len(first)) for n in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    return [path for option in options for path in expand_braces(head + option + tail)]


class EditShardDataset(torch.utils.data.IterableDataset):
    """Records streamed from webdataset-style tar shards: ``<key>.jpg|png|webp``, ``<key>.json`` (the text
    fields) and optionally ``<key>.edited.png``. Rank r reads the shards with ``index % world_size == r``
    (DataLoader workers split those again). The order depends only on ``seed`` and ``set_epoch``."""

    def __init__(self, shards: list[str], options: RecordOptions, names: dict, rank: int, world_size: int,
                 shuffle_buffer: int, max_records: int | None):
        self.shards = shards[rank::world_size]
        if not self.shards:
            raise ValueError(f"Rank {rank} of world_size={world_size} gets no shard: pass at least world_size "
                             f"shards (got {len(shards)}).")
        self._options, self._names, self._buffer, self._max = options, names, shuffle_buffer, max_records
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _samples(self, shard: str):
        """(index in shard, key, {extension: bytes}) of each sample, read as a stream."""
        group, key, index = {}, None, 0
        try:
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, _, name = member.name.rpartition("/")
                    stem, _, extension = name.partition(".")
                    member_key = f"{folder}/{stem}" if folder else stem
                    if member_key != key and group:
                        yield index, key, group
                        group, index = {}, index + 1
                    key = member_key
                    group[extension.lower()] = tar.extractfile(member).read()
        except tarfile.TarError as error:
            raise ValueError(f"`source` shard {shard!r} is not a readable tar file: {error}") from error
        if group:
            yield index, key, group

    def _item(self, shard: str, index: int, key: str, group: dict) -> dict:
        where = f"sample {index} ({Path(shard).name}:{key})"
        if "json" not in group:
            raise BadRecord(f"{where}: no .json with the text fields")
        try:
            record = json.loads(group["json"])
        except ValueError as error:
            raise BadRecord(f"{where}: unreadable .json: {error}") from error
        texts = {field: record.get(self._names[field]) for field in TEXT_FIELDS}
        problem = text_problem(texts)
        image = next((group[e] for e in IMAGE_EXTENSIONS if e in group), None)
        edited = next((group[f"edited.{e}"] for e in IMAGE_EXTENSIONS if f"edited.{e}" in group), None)
        if problem or image is None:
            raise BadRecord(f"{where}: {problem or 'no image'}")
        try:
            return make_item(texts, image, edited, index, where, self.epoch, self._options)
        except BadRecord as error:
            raise BadRecord(f"{where}: {error}") from error

    def __iter__(self):
        rng = random.Random(f"{self._options.seed}:{self.epoch}")
        shards = list(self.shards)
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            shards = shards[worker.id::worker.num_workers]
        if self._buffer:
            rng.shuffle(shards)
        samples = itertools.islice(((s, *sample) for s in shards for sample in self._samples(s)), self._max)
        for shard, index, key, group in _shuffled(samples, self._buffer, rng):
            try:
                yield self._item(shard, index, key, group)
            except BadRecord as error:
                report_bad_record(error, self._options)


def _shuffled(items, buffer_size: int, rng: random.Random):
    """Items in a seeded random order drawn from a buffer of ``buffer_size`` (0: the given order)."""
    buffer = []
    for item in items:
        if buffer_size <= 1:
            yield item
            continue
        buffer.append(item)
        if len(buffer) >= buffer_size:
            yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer
