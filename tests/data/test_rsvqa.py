"""RSVQA-LR and RSVQA-HR on tiny fake files in the layout of their Zenodo records
(tests/data/rsvqa_{lr,hr}/data.py), through the datamodule into the conversation batch, and
per-type VQA accuracy on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from zoo.data.rsvqa import RSVQADataModule, RSVQADataset
from zoo.metrics.generation import GenerationMetrics

DATA = Path(__file__).parent
CONFIGS = Path(__file__).parents[2] / "configs" / "data"
SIZE = 16
KEYS = {
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


def _rows(dm: RSVQADataModule, split: str) -> tuple[list[dict], dict[str, tuple[str, str, str]]]:
    batches = [dm.on_after_batch_transfer(b, 0) for b in getattr(dm, f"{split}_dataloader")()]
    rows = {
        q: (r, t, task)
        for b in batches
        for q, r, t, task in zip(
            b["question"], b["reference"], b["question_type"], b["task"], strict=True
        )
    }
    return batches, rows


def test_lr_batches() -> None:
    dm = RSVQADataModule(str(DATA / "rsvqa_lr"), "lr", batch_size=4, image_size=SIZE)
    dm.setup("fit")
    assert dm.question_types == ["count", "presence", "comp", "rural_urban"]
    assert dm.class_names == []
    assert len(dm.train_dataset) == 8  # 2 images x 4 types; the inactive question is left out
    batches, rows = _rows(dm, "train")
    batch = batches[0]
    assert set(batch) == KEYS
    assert batch["image"].shape == (4, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32
    assert -2.2 <= batch["image"].min() and batch["image"].max() <= 2.7
    for key in ("input_ids", "attention_mask", "labels", "prompt_ids", "prompt_attention_mask"):
        assert batch[key].dtype == torch.long and batch[key].shape[0] == 4
    assert (batch["labels"] != -100).any()
    assert batch["references"] == [[r] for r in batch["reference"]]
    assert "Is this question inactive?" not in rows
    assert rows["How many buildings are there in image 1?"] == ("4", "count", "vqa")
    assert rows["Is image 1 a rural or an urban area?"] == ("urban", "rural_urban", "vqa")
    assert {t for _, t, _ in rows.values()} == set(dm.question_types)
    prompt = dm.tokenizer.decode(batch["prompt_ids"][0], skip_special_tokens=True)
    assert "single word or phrase" in prompt  # short_answer
    _, val = _rows(dm, "val")
    assert val["Are there more water areas than buildings in image 2?"] == ("no", "comp", "vqa")


def test_hr_test_phili_keeps_area_answers_verbatim() -> None:
    dm = RSVQADataModule(
        str(DATA / "rsvqa_hr"),
        "hr",
        test_split="test_phili",
        short_answer=False,
        batch_size=2,
        image_size=SIZE,
    )
    dm.setup("test")
    assert dm.question_types == ["count", "presence", "comp", "area"]
    batches, rows = _rows(dm, "test")
    assert len(rows) == 4 and set(batches[0]) == KEYS
    assert rows["What is the area covered by grass in tile 4?"] == (
        "more than 1000m2",
        "area",
        "vqa",
    )
    prompt = dm.tokenizer.decode(batches[0]["prompt_ids"][0], skip_special_tokens=True)
    assert "single word" not in prompt
    dm = RSVQADataModule(str(DATA / "rsvqa_hr"), "hr", batch_size=2, image_size=SIZE)
    dm.setup("test")
    _, rows = _rows(dm, "test")
    assert rows["What is the area covered by grass in tile 3?"] == (
        "between 100m2 and 1000m2",
        "area",
        "vqa",
    )


def test_per_type_accuracy_on_the_batch() -> None:
    dm = RSVQADataModule(str(DATA / "rsvqa_lr"), "lr", batch_size=4, image_size=SIZE)
    dm.setup("validate")
    metric = GenerationMetrics(question_types=dm.question_types, meteor=False)
    for batch in dm.val_dataloader():
        answers = list(batch["reference"])
        answers[0] = "wrong"  # the count question of image 2
        metric.update(batch, answers)
    scores = metric.compute()
    assert scores["vqa_accuracy"] == pytest.approx(0.75)
    assert scores["vqa_accuracy_count"] == 0
    assert scores["vqa_accuracy_presence"] == scores["vqa_accuracy_rural_urban"] == 1


def test_dataset_sample() -> None:
    dataset = RSVQADataset(DATA / "rsvqa_lr", "lr", "test", image_size=SIZE)
    sample = dataset[0]
    assert set(sample) == {"image", "id", "question", "answer", "question_type", "image_id"}
    assert sample["image"].shape == (3, SIZE, SIZE) and 0 <= sample["image"].min() <= 255
    assert (sample["question"], sample["answer"], sample["image_id"]) == (
        "How many buildings are there in image 3?",
        "10",
        "3",
    )
    record = dataset.records[1]
    assert record["image"] == "Images_LR/3.tif" and record["question_types"] == ["presence"]


@pytest.mark.parametrize(("config", "variant"), [("rsvqa_lr.yaml", "lr"), ("rsvqa_hr.yaml", "hr")])
def test_config(config: str, variant: str) -> None:
    """The YAML parses as LightningCLI would parse it and loads the fake data."""
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    cfg = parser.parse_path(CONFIGS / config)
    assert cfg.data.init_args.root == f"data/rsvqa_{variant}"
    cfg.data.init_args.root = str(DATA / f"rsvqa_{variant}")
    cfg.data.init_args.image_size = SIZE
    dm = parser.instantiate_classes(cfg).data
    assert isinstance(dm, RSVQADataModule) and dm.variant == variant
    dm.setup("test")
    assert len(dm.test_dataset) == 4


def test_missing_root_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"nowhere.*zenodo.org/records/6344367.*download=True"
    ):
        RSVQADataset(tmp_path / "nowhere", "hr")


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    root = Path(shutil.copytree(DATA / "rsvqa_lr", tmp_path / "lr"))
    (root / "LR_split_val_answers.json").unlink()
    with pytest.raises(FileNotFoundError, match="LR_split_val_answers.json does not exist"):
        RSVQADataset(root, "lr", "val")


def _corrupt(tmp_path: Path, name: str, key: str, index: int, change: dict) -> Path:
    root = Path(shutil.copytree(DATA / "rsvqa_lr", tmp_path / "lr"))
    data = json.loads((root / name).read_text())
    data[key][index] |= change
    for k in [k for k, v in change.items() if v is None]:
        del data[key][index][k]
    (root / name).write_text(json.dumps(data))
    return root


def test_answer_missing_from_answers_file(tmp_path: Path) -> None:
    root = _corrupt(
        tmp_path, "LR_split_train_questions.json", "questions", 1, {"answers_ids": [999]}
    )
    with pytest.raises(
        ValueError,
        match=r"questions\[1\] \(id 1\): its answer 999 is not in .*LR_split_train_answers.json",
    ):
        RSVQADataset(root, "lr", "train")


def test_question_without_type(tmp_path: Path) -> None:
    root = _corrupt(tmp_path, "LR_split_train_questions.json", "questions", 2, {"type": None})
    with pytest.raises(
        ValueError,
        match=r"LR_split_train_questions.json, questions\[2\] \(id 2\): missing \['type'\]",
    ):
        RSVQADataset(root, "lr", "train")


def test_file_of_the_wrong_format(tmp_path: Path) -> None:
    root = Path(shutil.copytree(DATA / "rsvqa_lr", tmp_path / "lr"))
    (root / "LR_split_test_images.json").write_text("[]")
    with pytest.raises(
        ValueError, match="LR_split_test_images.json: expected an object with an? 'images' list"
    ):
        RSVQADataset(root, "lr", "test")


def test_bad_variant_and_split() -> None:
    with pytest.raises(ValueError, match="variant must be"):
        RSVQADataset(DATA / "rsvqa_lr", "mr")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be one of"):
        RSVQADataset(DATA / "rsvqa_lr", "lr", "test_phili")
    with pytest.raises(ValueError, match="test_split must be one of"):
        RSVQADataModule(str(DATA / "rsvqa_lr"), "lr", test_split="val")
