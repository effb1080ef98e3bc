"""Batches in an order fixed by the seed, so that a resumed run sees exactly the batches the uninterrupted run
would have seen (its noise generator is checkpointed with it), and a clock that keeps counting."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset

from .data import collate_edit_records


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


class BadRecords:
    """Counts the records a run asked for and the ones it had to skip, and stops the run when the data is
    mostly bad (``max_fraction`` of at least ``minimum`` records asked for) or entirely bad: otherwise a
    dataset whose images are all missing loops for ever, warning about each."""

    def __init__(self, max_fraction: float = 0.5, minimum: int = 200):
        if not 0 <= max_fraction <= 1:
            raise ValueError(f"`max_bad_fraction` must be in [0, 1], got {max_fraction}.")
        self.max_fraction, self.minimum, self.asked, self.bad = max_fraction, minimum, 0, 0

    def count(self, asked: int, got: int) -> None:
        self.asked, self.bad = self.asked + asked, self.bad + asked - got
        if self.asked >= self.minimum and self.bad > self.max_fraction * self.asked:
            raise ValueError(f"{self.bad} of the {self.asked} records read so far were unusable (over "
                             f"--max_bad_fraction {self.max_fraction:g}); see the warnings above for why, and fix "
                             "the data.")

    def check_epoch(self, got_any: bool, size: int | str) -> None:
        if not got_any:
            raise ValueError(f"None of the dataset's {size} records could be read in a whole epoch (every image is "
                             "missing or unreadable); see the warnings above.")


def training_batches(dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0,
                     num_workers: int = 0, bad: BadRecords | None = None) -> Iterator[dict]:
    """Endless collated batches for process ``rank`` of ``world_size``, starting after ``start_batch`` batches.

    A map-style dataset is reshuffled every epoch with ``seed + epoch``; each process takes every
    ``world_size``-th record of the order and drops its last incomplete batch, so that ranks stay in step.
    A streaming dataset shards itself by rank (see `open_edit_dataset`); resuming reads past the first
    ``start_batch`` batches. Batches from which bad records were skipped are smaller; empty ones are skipped,
    and ``bad`` (a `BadRecords`) stops a run whose data is mostly or wholly unreadable.
    """
    bad = bad or BadRecords()
    if isinstance(dataset, IterableDataset):
        yield from _streamed(dataset, batch_size, start_batch, num_workers, bad)
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
        got_any = False
        for batch in loader:
            bad.count(batch_size, _size(batch))
            if _size(batch):
                got_any = True
                yield batch
        bad.check_epoch(got_any or offset > 0, len(dataset))
        epoch, offset = epoch + 1, 0


def _streamed(dataset: IterableDataset, batch_size: int, start_batch: int, num_workers: int,
              bad: BadRecords) -> Iterator[dict]:
    epoch, seen = 0, 0
    while True:
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_edit_records, num_workers=num_workers)
        empty, got_any = True, False
        for batch in loader:
            empty = False
            seen += 1
            got_any = got_any or bool(_size(batch))
            if seen > start_batch and _size(batch):  # a stream's last batch is short: only a wholly bad epoch stops it
                yield batch
        if empty:
            raise ValueError("The streaming dataset yielded no records for this process.")
        bad.check_epoch(got_any, "streamed")
        epoch += 1


def _size(batch: dict) -> int:
    return len(batch.get("input_caption", ()))
