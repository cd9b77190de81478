"""A training loader that resumes mid-epoch where it stopped, in the same order.

:class:`ResumableSampler` draws epoch ``e``'s order from ``(seed, e)`` alone (a
:class:`~torch.utils.data.DistributedSampler`, so it also splits the data across ranks and
Lightning leaves it as it is). :class:`ResumableLoader` counts the batches it has handed out in
the current epoch and implements ``state_dict`` / ``load_state_dict``, which Lightning saves in
every checkpoint and restores before the resumed epoch: the restored loader skips those batches
and continues with the next one of the same order.

Lightning does not prefetch from a loader whose length it knows (every map-style dataset), so
the count is exactly the number of batches the training loop has taken.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["ResumableLoader", "ResumableSampler", "train_loader"]


class ResumableSampler(DistributedSampler):
    """Shuffled indices that depend only on ``(seed, epoch)``; the next epoch can start at an
    offset.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: a new permutation each epoch, else the dataset's order.
        seed: the permutations' seed.
        num_replicas: ranks sharing the data (each gets every ``num_replicas``-th index).
        rank: this rank.
    """

    def __init__(
        self, dataset: Sized, shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class ResumableLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` over a :class:`ResumableSampler` with the
    ``state_dict`` / ``load_state_dict`` interface Lightning saves and restores.

    The state is ``{"epoch", "seed", "batches"}``: the epoch and seed of the order and the
    batches handed out of it. A state whose batches cover the whole epoch restores nothing (the
    next epoch starts from its beginning).
    """

    sampler: ResumableSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError(f"ResumableLoader needs a ResumableSampler, got {type(self.sampler).__name__}")
        self.batches = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.batches = self.sampler.skip // self.batch_size if self.batch_size else 0
        if self.generator is not None:  # the workers' seeds follow (seed, epoch) too
            self.generator.manual_seed(self.sampler.seed + self.sampler.epoch)
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "seed": self.sampler.seed, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.seed = int(state["seed"])
        self.sampler.set_epoch(int(state["epoch"]))
        skip = int(state["batches"]) * int(self.batch_size or 1)
        self.sampler.skip = skip if skip < self.sampler.num_samples else 0
        self.batches = 0


def train_loader(
    dataset: Any,
    batch_size: int,
    num_workers: int,
    collate_fn: Any,
    seed: int,
    num_replicas: int = 1,
    rank: int = 0,
) -> ResumableLoader:
    """The training loader of every zoo datamodule: shuffled by ``(seed, epoch)``, resumable."""
    sampler = ResumableSampler(dataset, shuffle=True, seed=seed, num_replicas=num_replicas, rank=rank)
    generator = torch.Generator().manual_seed(seed)  # the workers' seeds; not the global RNG
    return ResumableLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
        collate_fn=collate_fn, persistent_workers=num_workers > 0, generator=generator,
    )
