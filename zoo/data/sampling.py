"""Training-loader order: resumable mid-epoch, optionally length-grouped.

:class:`ResumableSampler` draws epoch ``e``'s order from ``(seed, e)`` alone (a
:class:`~torch.utils.data.DistributedSampler`, so it also splits the data across ranks and
Lightning leaves it as it is). :class:`LengthGroupedSampler` does the same with batches of
similar length, so padding to the batch's longest wastes little (the idea of Hugging Face
Trainer's ``group_by_length``): a random permutation from ``seed + epoch``, cut into groups of
``group_batches`` batches, each group sorted by length (longest first). Under
``num_replicas`` processes its order is padded (repeating its first indices) to whole batches
for every rank, and rank ``r`` takes batches ``r, r + num_replicas, ...`` (Lightning's own
distributed wrapper would reshuffle the order, so the datamodule asks for
``trainer.use_distributed_sampler: false`` and passes the ranks here).

:class:`ResumableLoader` counts the batches it has handed out in the current epoch and
implements ``state_dict`` / ``load_state_dict``, which Lightning saves in every checkpoint and
restores before the resumed epoch: the restored loader skips those batches and continues with
the next one of the same order, whichever of the two samplers it holds.

Lightning does not prefetch from a loader whose length it knows (every map-style dataset), so
the count is exactly the number of batches the training loop has taken.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

__all__ = [
    "LengthGroupedSampler",
    "ResumableLoader",
    "ResumableSampler",
    "padding_fraction",
    "train_loader",
]


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
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])


class LengthGroupedSampler(Sampler[int]):
    """Indices in an order whose consecutive ``batch_size`` runs have close ``lengths``, the
    batches themselves in a random order (a sorted group's long and short batches are mixed over
    the epoch; a last partial batch stays last).

    Args:
        lengths: the length of each sample (tokens).
        batch_size: the loader's batch size (groups are whole batches, so batches stay aligned).
        seed: the order of epoch ``e`` is drawn from ``seed + e``.
        group_batches: batches per sorted group; larger groups pad less, smaller ones mix more.
        num_replicas: processes that share the epoch.
        rank: this process's index among them.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        group_batches: int = 50,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or group_batches < 1:
            raise ValueError(
                f"batch_size and group_batches must be >= 1, got {batch_size}, {group_batches}"
            )
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
        self.skip = 0  # indices to leave out of the next epoch (a resumed loader's)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch whose order the next iteration gives (Lightning calls this).

        Args:
            epoch: the epoch.
        """
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """Every index once, in epoch ``epoch``'s grouped order.

        Args:
            epoch: the epoch (with the seed, it fixes the order).

        Returns:
            The indices of the whole dataset (all ranks).
        """
        generator = torch.Generator().manual_seed(self.seed + epoch)
        permutation = torch.randperm(len(self.lengths), generator=generator)
        groups = []
        for chunk in permutation.split(self.batch_size * self.group_batches):
            # Stable sort, longest first, within the randomly drawn group.
            groups.append(
                chunk[torch.sort(self.lengths[chunk], descending=True, stable=True).indices]
            )
        grouped = torch.cat(groups)
        # The whole batches in a random order, the partial one (if any) last so the loader's
        # batches stay aligned: a group as large as the epoch (50 batches of 16 or 32 cover the
        # default fits' 800 conversations) would otherwise give every long sample first and every
        # short one last, the same tasks at the end of every epoch (issue 27: the FUSE demo saw
        # all its VQA batches, then all its caption batches, and answered "no" to everything).
        whole = len(grouped) // self.batch_size
        batches = grouped[: whole * self.batch_size].view(whole, self.batch_size)
        batches = batches[torch.randperm(whole, generator=generator)].flatten()
        return torch.cat([batches, grouped[whole * self.batch_size :]]).tolist()

    def __iter__(self) -> Iterator[int]:
        # ``epoch`` stays the running epoch until it is exhausted (a resumable loader's state
        # reads it mid-epoch); only then does an iteration without set_epoch move on.
        epoch = self.epoch
        skip, self.skip = self.skip, 0
        yield from self._rank_order(epoch)[skip:]
        self.epoch = epoch + 1

    def _rank_order(self, epoch: int) -> list[int]:
        """This rank's indices of epoch ``epoch``."""
        order = self.order(epoch)
        if self.num_replicas == 1:
            return order
        b = self.batch_size
        order = order + order[: len(self) * self.num_replicas - len(order)]
        return [
            i
            for start in range(self.rank * b, len(order), self.num_replicas * b)
            for i in order[start : start + b]
        ]

    @property
    def num_samples(self) -> int:
        """Indices this rank yields per epoch (the name :class:`ResumableSampler` uses)."""
        return len(self)

    def __len__(self) -> int:
        """Indices this rank yields per epoch."""
        if self.num_replicas == 1:
            return len(self.lengths)
        per_rank = -(-len(self.lengths) // (self.batch_size * self.num_replicas))
        return per_rank * self.batch_size


class ResumableLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` that Lightning saves and restores mid-epoch.

    It has the ``state_dict`` / ``load_state_dict`` interface Lightning calls; its sampler is a
    :class:`ResumableSampler` or a :class:`LengthGroupedSampler`. The state is
    ``{"epoch", "seed", "batches"}``: the epoch and seed of the order and the batches handed out
    of it. A state whose batches cover the whole epoch restores nothing (the next epoch starts
    from its beginning).

    Args:
        *args: :class:`~torch.utils.data.DataLoader`'s positional arguments.
        **kwargs: :class:`~torch.utils.data.DataLoader`'s keyword arguments; ``sampler`` must be
            a :class:`ResumableSampler` or a :class:`LengthGroupedSampler`.

    Raises:
        TypeError: the sampler is of another type.
    """

    sampler: ResumableSampler | LengthGroupedSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler | LengthGroupedSampler):
            raise TypeError(
                f"ResumableLoader needs a ResumableSampler or LengthGroupedSampler, got {type(self.sampler).__name__}"
            )
        self.batches = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.batches = self.sampler.skip // self.batch_size if self.batch_size else 0
        if self.generator is not None:  # the workers' seeds follow (seed, epoch) too
            self.generator.manual_seed(self.sampler.seed + self.sampler.epoch)
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """The loader's position, saved in Lightning's checkpoints.

        Returns:
            ``{"epoch", "seed", "batches"}``.
        """
        return {"epoch": self.sampler.epoch, "seed": self.sampler.seed, "batches": self.batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume from a saved position: the next iteration skips the batches already handed out.

        Args:
            state: a :meth:`state_dict`.
        """
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
    lengths: Sequence[int] | None = None,
) -> ResumableLoader:
    """The training loader of every zoo datamodule: shuffled by ``(seed, epoch)``, resumable.

    With ``lengths``, batches of similar length (:class:`LengthGroupedSampler`).

    Args:
        dataset: the training dataset.
        batch_size: samples per batch.
        num_workers: loader worker processes.
        collate_fn: the collate function.
        seed: the order's seed (also seeds the workers).
        num_replicas: the number of ranks the dataset is sharded over.
        rank: this process's rank.
        lengths: each sample's length, for length-grouped batches (None: plain shuffling).

    Returns:
        The resumable loader.
    """
    sampler: ResumableSampler | LengthGroupedSampler
    if lengths is None:
        sampler = ResumableSampler(
            dataset, shuffle=True, seed=seed, num_replicas=num_replicas, rank=rank
        )
    else:
        sampler = LengthGroupedSampler(
            lengths, batch_size, seed=seed, num_replicas=num_replicas, rank=rank
        )
    generator = torch.Generator().manual_seed(seed)  # the workers' seeds; not the global RNG
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        generator=generator,
    )


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """The fraction of padded positions when each batch is padded to its longest sample.

    Args:
        lengths: each sample's length.
        batches: the batches, as sample indices.

    Returns:
        Padded positions over all positions.
    """
    lengths = list(lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1.0 - sum(lengths[i] for b in batches for i in b) / padded
