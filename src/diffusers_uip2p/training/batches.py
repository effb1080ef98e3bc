"""Batches in an order fixed by the seed, and a checkpointable random generator, so that a resumed run sees
exactly the batches and the noise the uninterrupted run would have seen (and a clock that keeps counting)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from .data import collate_edit_records


class GeneratorState:
    """A ``torch.Generator`` that `Accelerator.register_for_checkpointing` can save and restore."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


class RunClock:
    """Training seconds that survive a resume: checkpointed with the run, so a card reports the whole run's
    time and not only the last process's (the time after the last checkpoint of a cut-off run is redone)."""

    def __init__(self):
        self.earlier, self.started = 0.0, time.time()

    @property
    def seconds(self) -> float:
        return self.earlier + time.time() - self.started

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.earlier, self.started = float(state["seconds"]), time.time()


def training_batches(dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                     num_workers: int = 0) -> Iterator[dict]:
    """Endless collated batches for process ``rank`` of ``world_size``, starting after ``start_batch`` batches.

    A map-style dataset is reshuffled every epoch with ``seed + epoch``; each process takes every
    ``world_size``-th record of the order and drops its last incomplete batch, so that ranks stay in step.
    A streaming dataset shards itself by rank (see `open_edit_dataset`); resuming reads past the first
    ``start_batch`` batches. Batches from which bad records were skipped are smaller; empty ones are skipped.
    """
    if isinstance(dataset, IterableDataset):
        yield from _streamed(dataset, batch_size, start_batch, num_workers)
        return
    per_epoch = len(dataset) // world_size // batch_size
    if per_epoch == 0:
        raise ValueError(f"The dataset has {len(dataset)} records: too few for one batch of {batch_size} on each of "
                         f"{world_size} process(es). Lower --train_batch_size or add records.")
    epoch, offset = divmod(start_batch, per_epoch)
    while True:
        dataset.set_epoch(epoch)  # per-epoch augmentation (random flips) is seeded by the epoch too
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        mine = order[rank::world_size][: per_epoch * batch_size]
        loader = DataLoader(dataset, batch_size=batch_size, sampler=mine[offset * batch_size:],
                            collate_fn=collate_edit_records, num_workers=num_workers)
        yield from (batch for batch in loader if _size(batch))
        epoch, offset = epoch + 1, 0


def _streamed(dataset: IterableDataset, batch_size: int, start_batch: int, num_workers: int) -> Iterator[dict]:
    epoch, seen = 0, 0
    while True:
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_edit_records, num_workers=num_workers)
        empty = True
        for batch in loader:
            empty = False
            seen += 1
            if seen > start_batch and _size(batch):
                yield batch
        if empty:
            raise ValueError("The streaming dataset yielded no records for this process.")
        epoch += 1


def _size(batch: dict) -> int:
    return len(batch.get("input_caption", ()))
