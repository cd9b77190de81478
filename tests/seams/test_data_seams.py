"""Seam: the data's pixels -> the model's input. The loaders give pixels in [0, 255]; the
datamodule normalizes them once on the device (``on_after_batch_transfer``) with its own mean and
standard deviation of [0, 1] pixels; nothing else scales them."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("name", ["image_text_dm", "conversation_dm", "referring_dm"])
def test_images_are_normalized_exactly_once(name, request):
    dm = request.getfixturevalue(name)
    raw = next(iter(dm.val_dataloader()))
    image = raw["image"].clone()
    assert image.dtype.is_floating_point
    assert image.min() >= 0 and 1.5 < image.max() <= 255, "loaders give pixels in [0, 255]"
    batch = dm.on_after_batch_transfer(dict(raw), 0)
    mean = torch.tensor(dm.mean).view(1, -1, 1, 1)
    std = torch.tensor(dm.std).view(1, -1, 1, 1)
    torch.testing.assert_close(batch["image"], (image / 255 - mean) / std)
