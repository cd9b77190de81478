"""Caption benchmarks (RSICD, UCM-Captions, Sydney-Captions, NWPU-Captions) on tiny fake files in
their real formats (tests/data/<name>/data.py), through both datamodules, and multi-reference
caption scoring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule

from tests.data.fakes import DATA, copy_fake, edited_fake, fake_datamodule
from zoo.data.captions import (
    CaptionConversationDataModule,
    CaptionDataModule,
    CaptionDataset,
    caption_records,
)
from zoo.data.conversations import ConversationDataset
from zoo.metrics.generation import GenerationMetrics

SIZE = 16
# name -> (fake root, config, images per split, a known (split, image_id, first reference))
CASES = {
    "rsicd": (
        "rsicd",
        "rsicd.yaml",
        {"train": 4, "val": 2, "test": 2},
        ("test", "7", "1 : a desert with many dunes ."),
    ),
    "ucm": (
        "ucm_captions",
        "ucm_captions.yaml",
        {"train": 3, "val": 1, "test": 2},
        ("val", "3", "there is a harbor number 1 ."),
    ),
    "sydney": (
        "sydney_captions",
        "sydney_captions.yaml",
        {"train": 3, "val": 1, "test": 1},
        ("test", "4", "a airport area seen from above , view 1 ."),
    ),
    "nwpu": (
        "nwpu_captions",
        "nwpu_captions.yaml",
        {"train": 2, "val": 2, "test": 2},
        ("test", "5", "harbor picture 3 , sentence 0 ."),
    ),
}
IMAGENET_RANGE = (-2.2, 2.7)  # (0 - max mean) / min std, (1 - min mean) / min std


def _batches(dm: LightningDataModule, split: str) -> list[dict]:
    loader = getattr(dm, f"{split}_dataloader")()
    return [dm.on_after_batch_transfer(batch, 0) for batch in loader]


@pytest.mark.parametrize("name", sorted(CASES))
def test_caption_datamodule_batches(name: str) -> None:
    folder, _, counts, (split, image_id, first) = CASES[name]
    dm = CaptionDataModule(str(DATA / folder), name, batch_size=2, image_size=SIZE)
    dm.setup("fit")
    dm.setup("test")
    assert dm.class_names == []
    assert len(dm.train_dataset) == counts["train"] and len(dm.test_dataset) == counts["test"]
    batch = _batches(dm, "train")[0]
    assert set(batch) == {
        "image",
        "caption",
        "input_ids",
        "attention_mask",
        "references",
        "image_id",
    }
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32
    assert IMAGENET_RANGE[0] <= batch["image"].min() and batch["image"].max() <= IMAGENET_RANGE[1]
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    assert all(isinstance(c, str) for c in batch["caption"])
    # training captions are drawn from the image's own references
    assert all(c in refs for c, refs in zip(batch["caption"], batch["references"], strict=True))
    evaluated = [b for s in ("val", "test") for b in _batches(dm, s)]
    rows = [
        (i, c, r)
        for b in evaluated
        for i, c, r in zip(b["image_id"], b["caption"], b["references"], strict=True)
    ]
    assert all(c == r[0] for _, c, r in rows)  # evaluation captions are the first reference
    known = {i: r for i, _, r in rows}[image_id]
    assert known[0] == first and len(known) == (4 if name == "nwpu" else 5)


def test_caption_words_in_vocabulary() -> None:
    dm = CaptionDataModule(str(DATA / "rsicd"), "rsicd", batch_size=2, image_size=SIZE)
    assert {"playground", "ships", "farmland"} <= set(dm.vocabulary())
    assert "church" not in dm.vocabulary()  # a validation word: the vocabulary is from training
    ids = dm.tokenizer("a port with many ships .")["input_ids"]
    assert dm.tokenizer.unk_token_id not in ids


def test_random_caption_per_draw() -> None:
    dataset = CaptionDataModule(str(DATA / "ucm_captions"), "ucm", image_size=SIZE)._dataset(
        "train"
    )
    torch.manual_seed(0)
    drawn = {dataset[0]["caption"] for _ in range(30)}
    assert len(drawn) > 1 and drawn <= set(dataset[0]["references"])


def test_caption_dataset_sample() -> None:
    dataset = CaptionDataset(DATA / "sydney_captions", "sydney", "train", image_size=SIZE)
    sample = dataset[1]
    assert set(sample) == {"image", "references", "image_id"}
    assert sample["image"].shape == (3, SIZE, SIZE) and sample["image"].dtype == torch.float32
    assert 0 <= sample["image"].min() and sample["image"].max() <= 255
    assert sample["image_id"] == "1"
    assert sample["references"][2] == "a industrial area seen from above , view 3 ."


@pytest.mark.parametrize("name", ["rsicd", "nwpu"])
def test_caption_conversation_datamodule(name: str) -> None:
    folder, _, counts, (split, image_id, first) = CASES[name]
    dm = CaptionConversationDataModule(str(DATA / folder), name, batch_size=2, image_size=SIZE)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_dataset) == 5 * counts["train"]  # one record per (image, caption)
    assert len(dm.test_dataset) == counts["test"]  # one per image
    train = _batches(dm, "train")[0]
    keys = {
        "image",
        "id",
        "task",
        "question_type",
        "input_ids",
        "attention_mask",
        "labels",
        "prompt_ids",
        "prompt_attention_mask",
        "question",
        "reference",
        "references",
    }
    assert set(train) == keys
    assert train["task"] == ["caption", "caption"]
    assert train["labels"].shape == train["input_ids"].shape and train["labels"].dtype == torch.long
    assert (train["labels"] == -100).any() and (train["labels"] != -100).any()
    assert IMAGENET_RANGE[0] <= train["image"].min() and train["image"].max() <= IMAGENET_RANGE[1]
    test = [b for b in _batches(dm, "test")]
    rows = {
        i: (q, r, rs)
        for b in test
        for i, q, r, rs in zip(b["id"], b["question"], b["reference"], b["references"], strict=True)
    }
    question, reference, references = rows[image_id]
    assert question == "Describe this image briefly."
    assert reference == first == references[0]
    assert len(references) == (4 if name == "nwpu" else 5)
    assert test[0]["prompt_ids"].dtype == torch.long


def test_caption_records_in_memory() -> None:
    captions = CaptionDataset(DATA / "ucm_captions", "ucm", "test", image_size=SIZE)
    records = caption_records(captions, "What is in the image?", train=False)
    dataset = ConversationDataset.from_records(
        captions.root, records, SIZE, source="ucm test", image_dir=captions.images_dir
    )
    sample = dataset[0]
    assert sample["task"] == "caption" and sample["references"][0] == "there is a river number 1 ."
    assert sample["conversations"][0]["value"] == "<image>\nWhat is in the image?"


@pytest.mark.parametrize("name", sorted(CASES))
def test_caption_config(name: str) -> None:
    """The YAML parses as LightningCLI would parse it and loads the fake data."""
    folder, config, counts, _ = CASES[name]
    dm = fake_datamodule(config, folder, image_size=SIZE)
    assert isinstance(dm, CaptionDataModule) and dm.name == name
    dm.setup("validate")
    assert len(dm.val_dataset) == counts["val"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_root_says_where_to_get_it(tmp_path: Path, name: str) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as error:
        CaptionDataModule(str(root), name).setup("fit")
    assert "github.com" in str(error.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset_rsicd.json"):
        CaptionDataset(tmp_path, "rsicd")


@pytest.mark.parametrize(
    ("folder", "file", "edit", "args", "match"),
    [
        pytest.param(
            "rsicd",
            "dataset_rsicd.json",
            lambda data: data["images"][2].pop("sentences"),
            ("rsicd",),
            r"dataset_rsicd.json, images\[2\] \(filename 'farmland_3.jpg'\).*sentences",
            id="karpathy_entry_without_sentences",
        ),
        pytest.param(
            "nwpu_captions",
            "dataset_nwpu.json",
            lambda data: data["harbor"][1].pop("raw"),
            ("nwpu", "val"),
            r"class 'harbor' entry 1 \(filename 'harbor_002.jpg'\).*'raw'",
            id="nwpu_entry_without_caption",
        ),
        pytest.param(
            "nwpu_captions",
            "dataset_nwpu.json",
            lambda data: data["airplane"][0].update(
                dict.fromkeys(("raw", "raw_1", "raw_2", "raw_3", "raw_4"), " ")
            ),
            ("nwpu",),
            "airplane_001.jpg.*no caption",
            id="image_without_any_caption",
        ),
    ],
)
def test_broken_caption_entry_is_named(tmp_path: Path, folder, file, edit, args, match) -> None:
    root = edited_fake(tmp_path, folder, file, edit)
    with pytest.raises(ValueError, match=match):
        CaptionDataset(root, *args)


def test_karpathy_file_of_the_wrong_format(tmp_path: Path) -> None:
    root = copy_fake(tmp_path, "ucm_captions")
    (root / "dataset.json").write_text(json.dumps([{"filename": "1.tif"}]))
    with pytest.raises(ValueError, match="dataset.json: a Karpathy-style caption file"):
        CaptionDataset(root, "ucm")


def test_split_without_images_and_bad_names(tmp_path: Path) -> None:
    root = edited_fake(
        tmp_path,
        "sydney_captions",
        "dataset.json",
        lambda data: data.update(images=[i for i in data["images"] if i["split"] != "val"]),
    )
    with pytest.raises(
        ValueError, match=r"no image in split 'val'; its splits are \['test', 'train'\]"
    ):
        CaptionDataset(root, "sydney", "val")
    with pytest.raises(ValueError, match="name must be one of"):
        CaptionDataset(root, "coco")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be one of"):
        CaptionDataset(root, "sydney", "restval")


def test_missing_image_file_is_named(tmp_path: Path) -> None:
    root = copy_fake(tmp_path, "ucm_captions")
    (root / "imgs" / "1.tif").unlink()
    dataset = CaptionDataset(root, "ucm", "train", image_size=SIZE)
    with pytest.raises(
        FileNotFoundError, match=r"imgs/1.tif is missing \(image '0' of .*dataset.json\)"
    ):
        dataset[0]


def test_generation_metrics_score_against_all_references() -> None:
    """A caption equal to the third reference is perfect against the five, not against one."""
    references = [
        [
            "a red roof near a road .",
            "green trees around a pond .",
            "many white ships are moored in the port .",
            "a port .",
            "ships in a port .",
        ]
    ]
    answer = ["many white ships are moored in the port ."]
    scores = {}
    for multi in (True, False):
        metric = GenerationMetrics(meteor=False)
        batch = {"task": ["caption"], "question_type": [""], "reference": [references[0][0]]}
        if multi:
            batch["references"] = references
        metric.update(batch, answer)
        scores[multi] = metric.compute()
    assert scores[True]["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert scores[False]["BLEU-4"] < 0.5
