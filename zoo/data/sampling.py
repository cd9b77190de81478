"""Length-grouped batches: samples of similar length share a batch, so padding to the batch's
longest wastes little.

The epoch's order is drawn from ``seed + epoch`` alone (the same on every rank and run):
a random permutation, cut into groups of ``group_batches`` batches, each group sorted by
length and cut into batches, and the batches shuffled. Every sample is in exactly one batch
of an epoch (the last may be smaller). Under several processes each rank takes every
``num_replicas``-th batch, the list first padded by repeating its first batches so that
all ranks step equally often.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["LengthGroupedBatchSampler", "padding_fraction"]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices whose ``lengths`` are close (HF Trainer's ``group_by_length`` idea).

    Args:
        lengths: the length of each sample (tokens).
        batch_size: samples per batch.
        seed: the order of epoch ``e`` is drawn from ``seed + e``.
        group_batches: batches per sorted group; larger groups pad less, smaller ones mix more.
        num_replicas: processes that share the epoch (1: this one takes every batch).
        rank: this process's index among them.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, seed: int = 0, group_batches: int = 50,
        num_replicas: int = 1, rank: int = 0,
    ) -> None:
        if batch_size < 1 or group_batches < 1:
            raise ValueError(f"batch_size and group_batches must be >= 1, got {batch_size}, {group_batches}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside the {num_replicas} replicas")
        if len(lengths) == 0:
            raise ValueError("length grouping needs at least one sample")
        self.lengths = torch.as_tensor(list(lengths), dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.group_batches = group_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this at the start of every epoch."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """Every batch of this epoch, for all ranks."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        group = self.batch_size * self.group_batches
        batches: list[list[int]] = []
        for chunk in order.split(group):
            # Stable sort by length, longest first, within the randomly drawn group.
            ranked = chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            batches.extend(b.tolist() for b in ranked.split(self.batch_size))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        if self.num_replicas > 1:
            short = -len(batches) % self.num_replicas
            batches = batches + batches[:short]
        yield from batches[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        count = -(-len(self.lengths) // self.batch_size)
        return -(-count // self.num_replicas)


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The fraction of padded positions when each batch is padded to its longest sample."""
    lengths = list(lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded
