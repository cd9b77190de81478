"""Tests of the referring benchmarks RRSIS-D and RefSegRS (``zoo.data.referring_benchmarks``).

The fake files under ``tests/data/rrsisd`` and ``tests/data/refsegrs`` are written by the
``data.py`` next to them, in the real on-disk formats.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from PIL import Image

from zoo.data.coco_refs import CocoRefsDataModule, ReferringSegmentationDataModule
from zoo.data.datamodules import IMAGENET_MEAN, IMAGENET_STD
from zoo.data.referring import seg_phrase
from zoo.data.referring_benchmarks import (
    RefSegRSDataModule,
    RefSegRSDataset,
    RRSISDDataModule,
    RRSISDDataset,
    load_refs_pickle,
)

DATA = Path(__file__).parent
RRSISD = DATA / "rrsisd"
REFSEGRS = DATA / "refsegrs"
CONFIGS = Path(__file__).parents[2] / "configs" / "data"
PHRASE = seg_phrase()


def _module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"fake_{path.parent.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAKE_RRSISD = _module(RRSISD / "data.py")
FAKE_REFSEGRS = _module(REFSEGRS / "data.py")


def _box_mask(box: tuple[int, int, int, int], size: int = 32) -> torch.Tensor:
    r0, r1, c0, c1 = box
    mask = torch.zeros(size, size)
    mask[r0:r1, c0:c1] = 1
    return mask


def _batch(dm: ReferringSegmentationDataModule, loader: Any) -> dict[str, Any]:
    """One batch as a model sees it: transferred and normalized."""
    batch = next(iter(loader))
    return dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, torch.device("cpu"), 0), 0)


def _check_contract(batch: dict[str, Any], size: int, k: int) -> None:
    b = len(batch["id"])
    assert batch["image"].shape == (b, 3, size, size) and batch["image"].dtype == torch.float32
    # Normalized [0, 255] pixels: within the ImageNet-normalized range of [0, 1] pixels.
    low = min(-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    high = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    assert low - 1e-4 <= batch["image"].min() and batch["image"].max() <= high + 1e-4
    assert batch["mask"].shape == (b, k, size, size) and batch["mask"].dtype == torch.float32
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert batch["mask_valid"].shape == (b, k) and batch["mask_valid"].dtype == torch.bool
    assert batch["category"].shape == (b, k) and batch["category"].dtype == torch.long
    counts = batch["mask_valid"].sum(1)
    assert counts.tolist() == [len(s) for s in batch["sentences"]]
    for i, n in enumerate(counts.tolist()):
        assert batch["mask"][i, :n].flatten(1).any(1).all()  # every valid target has pixels
        assert not batch["mask"][i, n:].any() and (batch["category"][i, n:] == -1).all()
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].dtype == torch.long and batch[key].shape == batch["input_ids"].shape
    assert batch["prompt_ids"].dtype == torch.long and batch["prompt_ids"].shape[0] == b
    assert (batch["labels"] != -100).any(1).all()
    assert batch["task"] == ["referring"] * b


# RRSIS-D ---------------------------------------------------------------------------------


def test_rrsisd_datamodule_val_batch():
    dm = RRSISDDataModule(str(RRSISD), batch_size=4, image_size=32, max_targets=2)
    assert dm.class_names == FAKE_RRSISD.CATEGORIES
    dm.setup("fit")
    assert len(dm.train_dataset) == 4  # one sample per training ref
    assert len(dm.val_dataset) == 3  # one per (ref, sentence): 2 + 1
    batch = _batch(dm, dm.val_dataloader())
    _check_contract(batch, 32, 2)
    assert batch["id"] == ["00003_ref4_s0", "00003_ref4_s1", "00004_ref5_s0"]
    # raw expressions, first word as a clause
    assert batch["sentences"] == [
        ["the bridge across the river"],
        ["a long bridge"],
        ["the windmill in the upper right"],
    ]
    assert batch["question"][0] == "Please segment the bridge across the river."
    assert batch["reference"][0] == f"Sure, the bridge across the river is {PHRASE}."
    assert batch["mask_valid"].tolist() == [[True, False]] * 3  # K = 1, padded to 2
    bridge = _box_mask(FAKE_RRSISD.OBJECTS[4][4])
    assert torch.equal(batch["mask"][0, 0], bridge) and torch.equal(batch["mask"][1, 0], bridge)
    assert torch.equal(batch["mask"][2, 0], _box_mask(FAKE_RRSISD.OBJECTS[5][4]))
    names = FAKE_RRSISD.CATEGORIES
    assert batch["category"][:, 0].tolist() == [
        names.index("bridge"),
        names.index("bridge"),
        names.index("windmill"),
    ]
    assert batch["category"][:, 1].tolist() == [-1, -1, -1]


def test_rrsisd_train_masks_rle_and_polygon():
    dm = RRSISDDataModule(str(RRSISD), batch_size=4, image_size=32)
    dm.setup("fit")
    batch = _batch(dm, dm.train_dataloader())
    _check_contract(batch, 32, 1)
    names = FAKE_RRSISD.CATEGORIES
    seen = {}
    for i, (sentences, sample_id) in enumerate(zip(batch["sentences"], batch["id"], strict=True)):
        n = int(sample_id.split("_ref")[1])
        image_id, split, category, kind, box, raws = FAKE_RRSISD.OBJECTS[n]
        assert split == "train" and sample_id.startswith(f"{image_id:05d}_")
        assert sentences[0].lower() == raws[0].lower()
        assert batch["category"][i, 0] == names.index(category)
        mask = batch["mask"][i, 0]
        if kind == "rle":
            assert torch.equal(mask, _box_mask(box))
        else:  # rasterized polygon: the box, up to its border pixels
            r0, r1, c0, c1 = box
            assert mask[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1].all()
            assert mask.sum() <= (r1 - r0 + 1) * (c1 - c0 + 1) and mask.sum() == (
                mask[r0 : r1 + 1, c0 : c1 + 1].sum()
            )
        seen[n] = kind
    assert sorted(seen) == [0, 1, 2, 3]


def test_rrsisd_per_image_pads_targets():
    dm = RRSISDDataModule(str(RRSISD), batch_size=2, image_size=32, max_targets=3, per_image=True)
    dm.setup("test")
    assert len(dm.test_dataset) == 2  # images 5 (two refs) and 6 (one)
    batch = _batch(dm, dm.test_dataloader())
    _check_contract(batch, 32, 3)
    assert batch["id"] == ["00005", "00006"]
    assert batch["mask_valid"].tolist() == [[True, True, False], [True, False, False]]
    assert sorted(batch["sentences"][0]) == ["the chimney on the right", "the dam at the top"]
    words = batch["reference"][0]
    assert words.count(PHRASE) == 2 and words.startswith("Sure, the ")


def test_rrsisd_resize_nearest_and_vocabulary():
    full = RRSISDDataset(RRSISD, "val", image_size=32)[0]
    small = RRSISDDataset(RRSISD, "val", image_size=16)[0]
    assert small["image"].shape == (3, 16, 16) and small["mask"].shape == (1, 16, 16)
    assert torch.equal(small["mask"], full["mask"][:, 1::2, 1::2])  # nearest: pixel centres
    dm = RRSISDDataModule(str(RRSISD))
    vocabulary = set(dm.vocabulary())
    assert {"ship", "harbor", "airplane", "segment", "sure"} <= vocabulary
    assert "bridge" not in vocabulary  # validation expressions stay out


def test_rrsisd_missing_root(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"{root}.*github.com/Lsan2401/RMSIN"):
        _ = RRSISDDataModule(str(root)).class_names
    with pytest.raises(FileNotFoundError, match=r"refs\(unc\).p"):
        RRSISDDataset(root, "train")


@pytest.fixture
def rrsisd_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(RRSISD, tmp_path / "rrsisd"))


def _rewrite_refs(root: Path, edit: Any, protocol: int = 2) -> None:
    path = root / "rrsisd" / "refs(unc).p"
    refs = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(edit(refs), protocol=protocol))


def test_rrsisd_unknown_ann_id(rrsisd_copy):
    def edit(refs):
        refs[1]["ann_id"] = 999
        return refs

    _rewrite_refs(rrsisd_copy, edit)
    with pytest.raises(
        ValueError,
        match=r"refs\(unc\).p \(split 'train'\), ref 1 \(ref_id 1\): "
        r"ann_id 999 is not in .*instances.json",
    ):
        RRSISDDataModule(str(rrsisd_copy)).setup("fit")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_rrsisd_pickle_is_restricted(rrsisd_copy):
    path = rrsisd_copy / "rrsisd" / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": _Exploit()}]))
    with pytest.raises(ValueError, match=r"refs\(unc\).p: refused to load: global .*system"):
        load_refs_pickle(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"is not a readable refs pickle"):
        load_refs_pickle(path)


def test_rrsisd_numpy_scalars_and_bad_fields(rrsisd_copy):
    def numpy_ids(refs):
        for ref in refs:
            ref["ann_id"], ref["ref_id"] = np.int64(ref["ann_id"]), np.int32(ref["ref_id"])
        return refs

    for protocol in (2, 4):  # protocol 2 pickles numpy bytes through _codecs.encode
        _rewrite_refs(rrsisd_copy, numpy_ids, protocol)
        refs = load_refs_pickle(rrsisd_copy / "rrsisd" / "refs(unc).p")
        assert type(refs[0]["ann_id"]) is int
    sample = RRSISDDataset(rrsisd_copy, "val", image_size=32)[0]
    assert torch.equal(sample["mask"][0], _box_mask(FAKE_RRSISD.OBJECTS[4][4]))

    def drop_sentences(refs):
        del refs[2]["sentences"]
        return refs

    _rewrite_refs(rrsisd_copy, drop_sentences)
    missing = r"refs\(unc\).p, ref 2: missing field\(s\) \['sentences'\]"
    with pytest.raises(ValueError, match=missing):
        RRSISDDataset(rrsisd_copy, "train")

    def bad_split(refs):
        refs[0]["split"] = "testA"
        return refs

    shutil.copy(RRSISD / "rrsisd" / "refs(unc).p", rrsisd_copy / "rrsisd" / "refs(unc).p")
    _rewrite_refs(rrsisd_copy, bad_split)
    with pytest.raises(ValueError, match=r"unknown split value\(s\) \['testA'\]"):
        RRSISDDataset(rrsisd_copy, "train")


def test_coco_refs_layout_reads_the_same(tmp_path):
    """RRSIS-D converted to the generic layout loads through CocoRefsDataModule identically."""
    instances = json.loads((RRSISD / "rrsisd" / "instances.json").read_text())
    refs = pickle.loads((RRSISD / "rrsisd" / "refs(unc).p").read_bytes())
    shutil.copytree(RRSISD / "images" / "rrsisd" / "JPEGImages", tmp_path, dirs_exist_ok=True)
    # the generic loader reads "sent"; RRSIS-D's loader the raw text
    for split in ("train", "val", "test"):
        chosen = [r for r in refs if r["split"] == split]
        (tmp_path / f"refs_{split}.json").write_text(json.dumps(chosen))
        (tmp_path / f"instances_{split}.json").write_text(json.dumps(instances))
    dm = CocoRefsDataModule(str(tmp_path), batch_size=3, image_size=32, max_targets=2)
    assert isinstance(dm, ReferringSegmentationDataModule)
    assert dm.class_names == FAKE_RRSISD.CATEGORIES
    dm.setup("test")
    batch = _batch(dm, dm.test_dataloader())
    _check_contract(batch, 32, 2)
    reference = RRSISDDataModule(
        str(RRSISD), batch_size=3, image_size=32, max_targets=2, per_image=True
    )
    reference.setup("test")
    expected = _batch(reference, reference.test_dataloader())
    assert batch["id"] == expected["id"]
    assert torch.equal(batch["mask"], expected["mask"])
    assert torch.equal(batch["category"], expected["category"])


# RefSegRS --------------------------------------------------------------------------------


def test_refsegrs_datamodule_batch():
    dm = RefSegRSDataModule(str(REFSEGRS), batch_size=3, image_size=32, max_targets=2)
    assert dm.class_names == ["object"]
    dm.setup("fit")
    assert len(dm.train_dataset) == 3 and len(dm.val_dataset) == 2
    batch = _batch(dm, dm.val_dataloader())
    _check_contract(batch, 32, 2)
    entries = FAKE_REFSEGRS.SPLITS["val"]
    assert batch["id"] == [e[0] for e in entries]
    assert batch["sentences"] == [[e[1]] for e in entries]
    assert batch["question"][1] == "Please segment long lane marking."
    assert batch["reference"][1] == f"Sure, long lane marking is {PHRASE}."
    assert batch["mask_valid"].tolist() == [[True, False], [True, False]]
    assert batch["category"].tolist() == [[0, -1], [0, -1]]
    for i, (_, _, box) in enumerate(entries):
        assert torch.equal(batch["mask"][i, 0], _box_mask(box))
    vocabulary = set(dm.vocabulary())
    assert {"vehicle", "parking", "road", "segment"} <= vocabulary and "lane" not in vocabulary


def test_refsegrs_resize_and_threshold(tmp_path):
    root = Path(shutil.copytree(REFSEGRS, tmp_path / "refsegrs"))
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[0:8, 0:8] = 40  # below the authors' threshold of 50: background
    mask[8:16, 8:16] = 60
    Image.fromarray(mask).save(root / "masks" / "31.tif")
    sample = RefSegRSDataset(root, "test", image_size=16)[0]
    assert sample["image"].shape == (3, 16, 16) and sample["mask"].shape == (1, 16, 16)
    expected = torch.zeros(16, 16)
    expected[4:8, 4:8] = 1
    assert torch.equal(sample["mask"][0], expected)
    mask[:] = 0
    Image.fromarray(mask).save(root / "masks" / "31.tif")
    with pytest.raises(ValueError, match=r"masks/31.tif \(id '31' .*has no foreground"):
        RefSegRSDataset(root, "test")[0]


def test_refsegrs_errors(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"{root}.*huggingface.co/datasets/JessicaYuan"):
        RefSegRSDataModule(str(root)).setup("fit")
    with pytest.raises(FileNotFoundError, match=rf"{root}.*huggingface.co/datasets/JessicaYuan"):
        RefSegRSDataModule(str(root)).vocabulary()
    copy = Path(shutil.copytree(REFSEGRS, tmp_path / "refsegrs"))
    (copy / "masks" / "12.tif").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"mask file .*masks/12.tif of id '12' "
        r"\(.*output_phrase_train.txt, entry 2\) does not exist",
    ):
        RefSegRSDataModule(str(copy)).setup("fit")
    path = copy / "output_phrase_val.txt"
    path.write_text("21 building near the road\n\n22\n")
    with pytest.raises(ValueError, match=r"output_phrase_val.txt, line 3: expected '<id> "):
        RefSegRSDataset(copy, "val")


# Configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "root", "cls"),
    [
        ("rrsisd", RRSISD, RRSISDDataModule),
        ("refsegrs", REFSEGRS, RefSegRSDataModule),
        ("coco_refs", None, CocoRefsDataModule),
    ],
)
def test_data_configs(name, root, cls):
    path = CONFIGS / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("#")
    config = yaml.safe_load(text)
    assert set(config) == {"data"} and config["data"]["init_args"]["root"] == f"data/{name}"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    if root is not None:
        config["data"]["init_args"]["root"] = str(root)
    parsed = parser.parse_object(config)
    dm = parser.instantiate_classes(parsed).data
    assert type(dm) is cls
    if root is not None:
        assert dm.class_names  # reads the fake files
