"""GeoPix's multi-referring evaluation (Table III): every instance of a test image is asked for,
the memory's class comes from the text (the ground truth only as an oracle row), and the IoU is
computed at the image's original resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from zoo.data.coco_refs import CocoRefsDataModule
from zoo.metrics.segmentation import ReferringIoU
from zoo.models import GeoPix, MaskDecoderConfig, MemoryConfig

CLASSES = ["airplane", "ship", "storage tank"]
#: (category id, box x0, y0, x1, y1, sentence) of the five instances of the one test image.
INSTANCES = [
    (1, 5, 5, 30, 25, "the airplane at the upper left"),
    (2, 60, 10, 90, 30, "the ship near the top edge"),
    (3, 20, 50, 45, 80, "the storage tank on the left"),
    (3, 50, 50, 75, 80, "the storage tank in the middle"),
    (2, 85, 60, 115, 95, "the ship at the lower right"),
]
HEIGHT, WIDTH = 100, 120  # the original resolution (the model sees 64 x 64)


def write_fake_sior_t(root: Path) -> Path:
    """A SIOR-T-like split in the COCO instances + refs layout: one 100x120 image, 5 instances."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)).save(
        root / "img0.png"
    )
    anns, refs = [], []
    for i, (cat, x0, y0, x1, y1, sentence) in enumerate(INSTANCES):
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8, order="F")
        mask[y0:y1, x0:x1] = 1
        rle = mask_utils.encode(mask)
        rle["counts"] = rle["counts"].decode("ascii")
        anns.append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": cat,
                "segmentation": rle,
                "area": int(mask.sum()),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "iscrowd": 0,
            }
        )
        refs.append(
            {
                "ref_id": i,
                "ann_id": i + 1,
                "image_id": 1,
                "category_id": cat,
                "sentences": [{"sent": sentence}],
            }
        )
    coco = {
        "images": [{"id": 1, "file_name": "img0.png", "height": HEIGHT, "width": WIDTH}],
        "annotations": anns,
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)],
    }
    for split in ("train", "val", "test"):
        (root / f"instances_{split}.json").write_text(json.dumps(coco), encoding="utf-8")
        (root / f"refs_{split}.json").write_text(json.dumps(refs), encoding="utf-8")
    return root


def _datamodule(root: Path, max_targets: int) -> CocoRefsDataModule:
    dm = CocoRefsDataModule(
        str(root),
        image_size=64,
        batch_size=4,
        max_targets=max_targets,
        every_instance=True,
        original_resolution=True,
    )
    dm.setup("test")
    return dm


def _evaluate(model: GeoPix, dm: CocoRefsDataModule) -> None:
    with torch.no_grad():
        for batch in dm.test_dataloader():
            model._evaluate("test", dm.on_after_batch_transfer(batch, 0), 0)


@pytest.mark.parametrize("max_targets", [11, 2])
def test_every_instance_of_a_five_instance_image_is_scored(tmp_path, max_targets):
    """11 (the paper's cap on instances per image): one sample of 5 targets; 2: three samples
    (2 + 2 + 1), none left out."""
    dm = _datamodule(write_fake_sior_t(tmp_path / "sior_t"), max_targets)
    counts = [int(b["mask_valid"].sum()) for b in dm.test_dataloader()]
    assert sum(counts) == 5
    assert len(dm.test_dataset) == -(-5 // max_targets)
    torch.manual_seed(0)
    model = GeoPix(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        memory=MemoryConfig(capacity=4, dim=16),
        decoder=MaskDecoderConfig(dim=32),
    ).eval()
    _evaluate(model, dm)
    assert int(model.metrics["test"].count) == 5
    assert int(model.metrics["oracle_test"].count) == 5  # the ground-truth class, as an oracle


def test_iou_at_the_original_resolution_and_text_class(tmp_path):
    dm = _datamodule(write_fake_sior_t(tmp_path / "sior_t"), 11)
    torch.manual_seed(0)
    model = GeoPix(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        memory=MemoryConfig(capacity=4, dim=16),
        decoder=MaskDecoderConfig(dim=32),
    ).eval()
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    original = batch["mask_original"][0]
    assert original.shape == (5, HEIGHT, WIDTH) and original.dtype == torch.bool
    text = model.categories_from_sentences(batch)
    by_sentence = {
        s: CLASSES.index(s.split()[1] if "tank" not in s else "storage tank") for *_, s in INSTANCES
    }
    assert text.tolist() == [by_sentence[s] for s in batch["sentences"][0]]
    with torch.no_grad():
        model._evaluate("test", batch, 0)
        _, cond, features, target_image = model.conditions(
            batch, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        logits = model.decode_masks(cond, features, target_image, text)
    up = torch.nn.functional.interpolate(
        logits[:, None], size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False
    )[:, 0]
    expected = ReferringIoU()
    expected.update(up > 0, original)
    for key in ("mIoU", "cIoU"):
        torch.testing.assert_close(model.metrics["test"].compute()[key], expected.compute()[key])
