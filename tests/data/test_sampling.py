"""Length-grouped sampling: every sample once per epoch, the same order for the same seed and
epoch, and less padding than shuffled batches on the embedded conversations."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.data.sampling import LengthGroupedSampler, padding_fraction


def batches(sampler: LengthGroupedSampler, batch_size: int) -> list[list[int]]:
    return list(BatchSampler(sampler, batch_size, drop_last=False))


def test_every_sample_once_per_epoch_and_deterministic():
    lengths = torch.randint(1, 100, (103,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthGroupedSampler(lengths, batch_size=8, seed=3, group_batches=4)
    first = batches(sampler, 8)
    assert len(first) == 13 and len(sampler) == 103
    assert sorted(i for b in first for i in b) == list(range(103))
    # Within a sorted group, the batches' lengths do not overlap (the batches of the epoch come
    # in a random order: the first group's, the first 32 of epoch 0's draw, by their members).
    members = set(torch.randperm(103, generator=torch.Generator().manual_seed(3))[:32].tolist())
    group = sorted(
        (b for b in first if set(b) <= members),
        key=lambda b: -max(lengths[i] for i in b),
    )
    assert len(group) == 4
    assert all(
        min(lengths[i] for i in a) >= max(lengths[i] for i in b)
        for a, b in zip(group, group[1:], strict=False)
    )
    assert first == batches(LengthGroupedSampler(lengths, batch_size=8, seed=3, group_batches=4), 8)
    second = batches(sampler, 8)  # iterated again without set_epoch: the next epoch
    assert sorted(i for b in second for i in b) == list(range(103))
    assert second != first
    sampler.set_epoch(1)
    assert batches(sampler, 8) == second
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler(lengths, batch_size=0)


def test_long_and_short_batches_are_mixed_over_the_epoch():
    """Issue 27's seam: the default fits' 800 conversations (VQA long, captions short) fit in one
    sorted group, which gave every VQA batch first and every caption batch last, each epoch;
    the model ended each epoch on captions and the FUSE demo answered "no" to every question.
    The grouped batches must come in a random order: both kinds in each half of the epoch,
    and the partial batch last (the loader's batches stay whole)."""
    lengths = [120] * 400 + [15] * 408
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=0)  # 50 batches a group
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = batches(sampler, 16)
        assert [len(b) for b in drawn] == [16] * 50 + [8]  # the partial batch last
        kinds = [{lengths[i] for i in b} for b in drawn[:50]]
        assert sum(len(k) > 1 for k in kinds) <= 1  # grouped: one length a batch (bar one)
        long = [k == {120} for k in kinds]
        assert 5 <= sum(long[:25]) <= 20 and 5 <= sum(long[25:]) <= 20, long


def test_ranks_share_the_epoch_in_whole_grouped_batches():
    lengths = torch.randint(1, 100, (50,), generator=torch.Generator().manual_seed(1)).tolist()
    single = batches(LengthGroupedSampler(lengths, 4, seed=1), 4)
    ranks = [
        batches(LengthGroupedSampler(lengths, 4, seed=1, num_replicas=3, rank=r), 4)
        for r in range(3)
    ]
    assert {len(b) for b in ranks} == {5}  # equally many steps, all batches whole
    assert all(len(batch) == 4 for b in ranks for batch in b)
    assert {i for b in ranks for batch in b for i in batch} == set(range(50))
    assert ranks[0][0] == single[0] and ranks[1][0] == single[1]  # the grouped batches, dealt out
    with pytest.raises(ValueError, match="rank 3"):
        LengthGroupedSampler(lengths, 4, num_replicas=3, rank=3)


def test_grouping_cuts_padding_on_the_embedded_conversations(tmp_path):
    dm = EmbeddedConversationDataModule(
        str(tmp_path), splits=EmbeddedSplits(64, 2, 2), batch_size=8, group_by_length=True
    )
    dm.prepare_data()
    dm.setup("fit")
    lengths = dm.train_dataset.lengths(dm.tokenizer, dm.short_answer_tasks, dm.max_length)
    torch.manual_seed(0)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)
    loader.sampler.set_epoch(0)
    grouped = list(loader.batch_sampler)
    assert sorted(i for b in grouped for i in b) == list(range(len(dm.train_dataset)))
    shuffled = list(RandomSampler(range(len(lengths)), generator=torch.Generator().manual_seed(0)))
    plain = [shuffled[i : i + 8] for i in range(0, len(shuffled), 8)]
    assert padding_fraction(lengths, grouped) < 0.5 * padding_fraction(lengths, plain)
    # The collate pads to the batch's longest: a batch's width is its longest sample's length.
    loader.sampler.set_epoch(0)
    batch = next(iter(loader))
    assert batch["input_ids"].shape[1] == max(lengths[i] for i in grouped[0])
    assert batch["attention_mask"].sum().item() == sum(lengths[i] for i in grouped[0])


def test_length_grouped_loader_resumes_mid_epoch_in_the_same_order():
    """A ResumableLoader over a LengthGroupedSampler, stopped after 3 batches of epoch 1 and
    restored from its state, hands out exactly the remaining batches of the straight run."""
    from zoo.data.sampling import train_loader

    lengths = torch.randint(1, 100, (53,), generator=torch.Generator().manual_seed(1)).tolist()
    data = list(range(len(lengths)))

    def loader():
        return train_loader(data, 5, 0, lambda b: list(b), seed=11, lengths=lengths)

    straight = loader()
    straight.sampler.set_epoch(1)
    expected = list(straight)
    stopped = loader()
    stopped.sampler.set_epoch(1)
    seen = [batch for _, batch in zip(range(3), stopped, strict=False)]
    state = stopped.state_dict()
    assert state["batches"] == 3 and state["epoch"] == 1
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + list(resumed) == expected
    assert sorted(i for batch in expected for i in batch) == data
