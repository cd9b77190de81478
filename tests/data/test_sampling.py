"""Length-grouped batches: every sample once per epoch, the same order for the same seed, and
less padding than shuffled batches on the embedded conversations."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import RandomSampler

from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.data.sampling import LengthGroupedBatchSampler, padding_fraction


def test_every_sample_once_per_epoch_and_deterministic():
    lengths = torch.randint(1, 100, (103,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthGroupedBatchSampler(lengths, batch_size=8, seed=3, group_batches=4)
    first = list(sampler)
    assert len(first) == len(sampler) == 13
    assert sorted(i for b in first for i in b) == list(range(103))
    assert first == list(LengthGroupedBatchSampler(lengths, batch_size=8, seed=3, group_batches=4))
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(i for b in second for i in b) == list(range(103))
    assert second != first  # a new order each epoch


def test_ranks_share_the_epoch():
    lengths = list(range(50))
    ranks = [list(LengthGroupedBatchSampler(lengths, 4, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(batches) for batches in ranks}) == 1  # every rank steps equally often
    seen = {i for batches in ranks for b in batches for i in b}
    assert seen == set(range(50))
    with pytest.raises(ValueError, match="rank 3"):
        LengthGroupedBatchSampler(lengths, 4, num_replicas=3, rank=3)


def test_grouping_cuts_padding_on_the_embedded_conversations(tmp_path):
    dm = EmbeddedConversationDataModule(str(tmp_path), splits=EmbeddedSplits(64, 2, 2),
                                        batch_size=8, group_by_length=True)
    dm.prepare_data()
    dm.setup("fit")
    lengths = dm.train_dataset.lengths(dm.tokenizer, dm.short_answer_tasks, dm.max_length)
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    grouped = list(loader.batch_sampler)
    assert sorted(i for b in grouped for i in b) == list(range(len(dm.train_dataset)))
    shuffled = list(RandomSampler(range(len(lengths)), generator=torch.Generator().manual_seed(0)))
    plain = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]
    assert padding_fraction(lengths, grouped) < 0.5 * padding_fraction(lengths, plain)
    # The collate pads to the batch's longest: a batch's width is its longest sample's length.
    batch = next(iter(loader))
    assert batch["input_ids"].shape[1] == max(lengths[i] for i in grouped[0])
    assert batch["attention_mask"].sum().item() == sum(lengths[i] for i in grouped[0])
