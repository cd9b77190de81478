"""Tests of the referring segmentation metric (``zoo.metrics.segmentation``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from zoo.metrics.segmentation import ReferringIoU


def masks(*rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# Three 2×3 targets: IoU 2/4, empty prediction (0/2), both empty (counts as 1).
PRED = masks([[1, 1, 0], [1, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]])
TARGET = masks([[0, 1, 0], [1, 1, 0]], [[1, 1, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]])


def test_hand_computed():
    metric = ReferringIoU()
    metric.update(PRED, TARGET.float())
    result = metric.compute()
    assert result["mIoU"].item() == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert result["cIoU"].item() == pytest.approx((2 + 0 + 0) / (4 + 2 + 0))


def test_logits_valid_and_several_updates():
    metric = ReferringIoU()
    logits = torch.where(PRED, 3.0, -3.0)
    metric.update(logits[:1], TARGET[:1])
    metric.update(logits[1:], TARGET[1:])
    # A padded B×K batch: the invalid slot (a perfect match) must not count.
    padded_pred = torch.stack([PRED[:2], torch.stack([PRED[2], PRED[0]])])
    padded_target = torch.stack([TARGET[:2], torch.stack([TARGET[2], PRED[0]])])
    valid = torch.tensor([[True, True], [True, False]])
    metric.update(padded_pred, padded_target, valid)
    result = metric.compute()
    assert result["mIoU"].item() == pytest.approx(2 * (0.5 + 0.0 + 1.0) / 6)
    assert result["cIoU"].item() == pytest.approx(4 / 12)


def test_empty_states():
    metric = ReferringIoU()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute()["mIoU"].item())
    metric.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 4))  # logits 0 -> background
    assert metric.compute() == {"mIoU": torch.tensor(1.0), "cIoU": torch.tensor(1.0)}
    with pytest.raises(ValueError, match="same shape"):
        metric.update(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        metric = ReferringIoU()
        metric.update(PRED[rank::2], TARGET[rank::2])  # rank 0: targets 0 and 2, rank 1: 1
        result = metric.compute()
        torch.save({k: v.clone() for k, v in result.items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes(tmp_path: Path):
    init = f"file://{tmp_path / 'init'}"
    torch.multiprocessing.start_processes(
        _worker, args=(init, str(tmp_path)), nprocs=2, start_method="fork"
    )
    single = ReferringIoU()
    single.update(PRED, TARGET)
    expected = single.compute()
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key in ("mIoU", "cIoU"):
            assert result[key].item() == pytest.approx(expected[key].item())
