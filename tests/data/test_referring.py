"""Tests of referring segmentation as conversations (``zoo.data.referring``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from zoo.data import embedded
from zoo.data.coco_refs import (
    EmbeddedReferringDataModule,
    ReferringSegmentationDataModule,
    ReferringSegmentationDataset,
)
from zoo.data.datamodules import EmbeddedSplits
from zoo.data.referring import ReferringCollate, seg_phrase, seg_tokens

SIZES = {"num_train": 20, "num_val": 5, "num_test": 5}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return embedded.generate(tmp_path_factory.mktemp("ref") / "data", **SIZES, progress=False)


@pytest.fixture
def copy(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "copy"))


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj), encoding="utf-8")


def test_seg_tokens():
    assert seg_tokens() == ["[SEG0_0]", "[SEG0_1]", "[SEG0_2]", "[SEG1_0]", "[SEG1_1]", "[SEG1_2]"]
    assert seg_tokens(1, 2) == ["[SEG0_0]", "[SEG0_1]"]
    assert seg_phrase(2, 1) == "[SEG0_0] [SEG1_0]"
    with pytest.raises(ValueError):
        seg_tokens(0, 3)


def test_sample_matches_annotations(root):
    coco = load(root / "instances_train.json")
    anns = {a["id"]: a for a in coco["annotations"]}
    images = {i["id"]: i for i in coco["images"]}
    refs = load(root / "refs_train.json")
    by_sentence = {(r["image_id"], s["sent"]): r for r in refs for s in r["sentences"]}
    ds = ReferringSegmentationDataset(root, "train", image_size=64, max_targets=3)
    assert len(ds) == len({r["image_id"] for r in refs})
    phrase = seg_phrase()
    sizes = set()
    for index in range(len(ds)):
        sample = ds[index]
        k = len(sample["sentences"])
        sizes.add(k)
        assert 1 <= k <= 3
        assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
        assert sample["mask"].shape == (k, 64, 64)
        assert set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
        assert sample["task"] == "referring"
        human, gpt = sample["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\nPlease segment ")
        assert human["value"].endswith(", ".join(sample["sentences"]) + ".")
        expected = ", ".join(f"{s} is {phrase}" for s in sample["sentences"])
        assert gpt == {"from": "gpt", "value": f"Sure, {expected}."}
        for j, sentence in enumerate(sample["sentences"]):
            ref = by_sentence[(ds.image_ids[index], sentence)]
            ann = anns[ref["ann_id"]]
            assert sample["category"][j] == ann["category_id"] - 1
            decoded = mask_utils.decode(
                {**ann["segmentation"], "counts": ann["segmentation"]["counts"].encode()}
            )
            assert torch.equal(sample["mask"][j], torch.from_numpy(decoded).float())
        info = images[ds.image_ids[index]]
        assert sample["id"] == Path(info["file_name"]).stem
        # The embedded dataset is georeferenced: centre (lat, lon) and a ground sample distance.
        assert sample["geo"] == {"lat": info["lat"], "lon": info["lon"], "gsd_m": info["gsd_m"]}
        assert 3.0 < info["gsd_m"] < 7.0
    assert len(sizes) > 1  # train draws the number of targets


def test_deterministic_and_eval_uses_all_targets(root):
    a = ReferringSegmentationDataset(root, "train", 32, seed=0)
    b = ReferringSegmentationDataset(root, "train", 32, seed=0)
    c = ReferringSegmentationDataset(root, "train", 32, seed=1)
    assert all(a[i]["conversations"] == b[i]["conversations"] for i in range(len(a)))
    assert any(a[i]["conversations"] != c[i]["conversations"] for i in range(len(a)))
    val = ReferringSegmentationDataset(root, "val", 32, max_targets=2)
    for i in range(len(val)):
        assert len(val[i]["sentences"]) == min(2, len(val.refs[i]))
        assert torch.equal(val[i]["mask"], val[i]["mask"])


def test_resize_and_gsd(copy):
    coco = load(copy / "instances_train.json")
    for image in coco["images"]:
        image["gsd_m"] = 0.5
    dump(copy / "instances_train.json", coco)
    sample = ReferringSegmentationDataset(copy, "train", image_size=32)[0]
    assert sample["image"].shape == (3, 32, 32) and sample["mask"].shape[-2:] == (32, 32)
    assert sample["geo"]["gsd_m"] == pytest.approx(1.0)  # a resized pixel covers 2 original ones
    full = ReferringSegmentationDataset(copy, "train", image_size=64)[0]["mask"]
    assert torch.equal(sample["mask"], full[:, 1::2, 1::2])  # nearest-exact: pixel centres


def test_no_geo_without_location(copy):
    coco = load(copy / "instances_train.json")
    for image in coco["images"]:
        del image["lat"], image["lon"]
    dump(copy / "instances_train.json", coco)
    assert "geo" not in ReferringSegmentationDataset(copy, "train", 64)[0]


def _first_ref_ann(root: Path) -> tuple[dict, dict, int]:
    coco = load(root / "instances_train.json")
    ref = load(root / "refs_train.json")[0]
    ann = next(a for a in coco["annotations"] if a["id"] == ref["ann_id"])
    return coco, ann, ref["ref_id"]


@pytest.mark.parametrize(
    ("shape", "fill", "match"),
    [
        ((64, 64), 0, r"ref {ref_id} .*refs_train.json: no valid mask"),  # an empty mask
        ((32, 48), 1, r"mask size \(32, 48\) differs .*\(64, 64\)"),  # a mask of the wrong size
    ],
    ids=["empty_mask", "mask_size"],
)
def test_error_bad_mask(copy, shape, fill, match):
    coco, ann, ref_id = _first_ref_ann(copy)
    rle = mask_utils.encode(np.full(shape, fill, dtype=np.uint8, order="F"))
    ann["segmentation"] = {"size": list(shape), "counts": rle["counts"].decode()}
    dump(copy / "instances_train.json", coco)
    ds = ReferringSegmentationDataset(copy, "train", 64, max_targets=50)
    with pytest.raises(ValueError, match=match.replace("{ref_id}", str(ref_id))):
        ds[0]


def test_error_missing_image(copy):
    (copy / "images" / "train" / "train_00000.png").unlink()
    ds = ReferringSegmentationDataset(copy, "train", 64)
    with pytest.raises(FileNotFoundError, match=r"train_00000.png is missing .*sample 0"):
        ds[0]


def test_error_unknown_ann(copy):
    refs = load(copy / "refs_train.json")
    refs[0]["ann_id"] = 10**6
    dump(copy / "refs_train.json", refs)
    with pytest.raises(ValueError, match=r"refs_train.json, ref 0 .*ann_id 1000000"):
        ReferringSegmentationDataset(copy, "train", 64)


def test_collate_pads_and_labels_seg_tokens(root, tmp_path):
    dm = ReferringSegmentationDataModule(str(root), batch_size=4, image_size=64, max_targets=3)
    tokenizer = dm.tokenizer
    ids = tokenizer.convert_tokens_to_ids(seg_tokens())
    assert tokenizer.unk_token_id not in ids and len(set(ids)) == 6
    assert "<image>" in tokenizer.get_vocab()
    ds = ReferringSegmentationDataset(root, "train", 64, max_targets=3)
    samples = [ds[i] for i in range(6)]
    batch = ReferringCollate(tokenizer, max_length=256, max_targets=3)(samples)
    counts = [len(s["sentences"]) for s in samples]
    assert batch["mask"].shape == (6, 3, 64, 64)
    assert batch["mask_valid"].tolist() == [[j < k for j in range(3)] for k in counts]
    for i, (s, k) in enumerate(zip(samples, counts, strict=True)):
        assert torch.equal(batch["mask"][i, :k], s["mask"])
        assert not batch["mask"][i, k:].any()
        assert batch["category"][i, :k].tolist() == s["category"].tolist()
        assert (batch["category"][i, k:] == -1).all()
        labelled = batch["labels"][i][batch["labels"][i] != -100]
        assert int(torch.isin(labelled, torch.tensor(ids)).sum()) == 6 * k
        prompt = batch["prompt_ids"][i][batch["prompt_attention_mask"][i].bool()]
        assert not torch.isin(prompt, torch.tensor(ids)).any()
    assert batch["reference"][0] == samples[0]["conversations"][1]["value"]
    assert batch["geo"][0] == samples[0]["geo"] and batch["task"] == ["referring"] * 6
    with pytest.raises(ValueError, match="more than max_targets=1"):
        ReferringCollate(tokenizer, 256, max_targets=1)(samples)


def test_embedded_datamodule(tmp_path):
    dm = EmbeddedReferringDataModule(
        str(tmp_path), splits=EmbeddedSplits(20, 5, 5), batch_size=4, image_size=64
    )
    dm.prepare_data()
    dm.setup("fit")
    tokenizer = dm.tokenizer
    assert set(seg_tokens()) <= set(tokenizer.get_vocab())
    for dataset in (dm.train_dataset, dm.val_dataset):
        for i in range(len(dataset)):
            turns = dataset[i]["conversations"]
            text = " ".join(t["value"] for t in turns)
            assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"], text
    batch = next(iter(dm.train_dataloader()))
    batch = dm.on_after_batch_transfer(
        dm.transfer_batch_to_device(batch, torch.device("cpu"), 0), 0
    )
    assert batch["image"].shape == (4, 3, 64, 64) and batch["mask"].shape == (4, 3, 64, 64)
    assert batch["input_ids"].shape == batch["labels"].shape


def test_mix_samples_is_a_fixed_subset(tmp_path):
    """GeoPix's stage 2: a fixed random subset of image-level conversations (8,000 of VRSBench in
    the paper), distinct and the same for a seed; ``"all"`` mixes every one (stage 1)."""

    def train(**kwargs):
        dm = EmbeddedReferringDataModule(str(tmp_path), splits=EmbeddedSplits(20, 4, 4), **kwargs)
        dm.prepare_data()
        dm.setup("fit")
        return dm.train_dataset.datasets

    refs, subset = train(mix_samples=7)
    assert len(subset) == 7 and len(set(subset.indices)) == 7
    assert train(mix_samples=7)[1].indices == subset.indices
    _, everything = train(mix_samples="all")
    assert len(everything) > 7 and len(refs) == 20
    with pytest.raises(ValueError, match="replaces mix_ratio"):
        EmbeddedReferringDataModule(str(tmp_path), mix_ratio=0.5, mix_samples=7)
    with pytest.raises(ValueError, match="holds"):
        train(mix_samples=10**6)
