"""Length-grouped sampling: samples of similar length share a batch, so padding to the batch's
longest wastes little (the idea of Hugging Face Trainer's ``group_by_length``).

An epoch's order is drawn from ``seed + epoch`` alone: a random permutation, cut into groups of
``group_batches`` batches, each group sorted by length (longest first). A ``DataLoader`` with
this sampler and the same ``batch_size`` then cuts batches of similar lengths, every sample in
exactly one batch of the epoch (the last may be smaller). Lightning calls :meth:`set_epoch`;
a sampler iterated without it moves to the next epoch by itself.

Under ``num_replicas`` processes the order is first padded (repeating its first indices) to
whole batches for every rank, and rank ``r`` takes batches ``r, r + num_replicas, ...``: the
ranks step equally often and their batches stay length-grouped. (Lightning's own
distributed wrapper would reshuffle the order, so the datamodule asks for
``trainer.use_distributed_sampler: false`` and passes the ranks here.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

__all__ = ["LengthGroupedSampler", "padding_fraction"]


class LengthGroupedSampler(Sampler[int]):
    """Indices in an order whose consecutive ``batch_size`` runs have close ``lengths``.

    Args:
        lengths: the length of each sample (tokens).
        batch_size: the loader's batch size (groups are whole batches, so batches stay aligned).
        seed: the order of epoch ``e`` is drawn from ``seed + e``.
        group_batches: batches per sorted group; larger groups pad less, smaller ones mix more.
        num_replicas: processes that share the epoch.
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
        """The epoch whose order the next iteration gives (Lightning calls this)."""
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """Every index once, in epoch ``epoch``'s grouped order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        permutation = torch.randperm(len(self.lengths), generator=generator)
        groups = []
        for chunk in permutation.split(self.batch_size * self.group_batches):
            # Stable sort, longest first, within the randomly drawn group.
            groups.append(chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices])
        return torch.cat(groups).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        order = self.order(epoch)
        if self.num_replicas == 1:
            yield from order
            return
        b = self.batch_size
        order = order + order[: len(self) * self.num_replicas - len(order)]
        for start in range(self.rank * b, len(order), self.num_replicas * b):
            yield from order[start : start + b]

    def __len__(self) -> int:
        """Indices this rank yields per epoch."""
        if self.num_replicas == 1:
            return len(self.lengths)
        per_rank = -(-len(self.lengths) // (self.batch_size * self.num_replicas))
        return per_rank * self.batch_size


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The fraction of padded positions when each batch is padded to its longest sample."""
    lengths = list(lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded
