"""The image-text-location table format: batch contract and bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.conftest import CLASSES, write_table_dataset
from zoo.data import ImageTextLocationDataModule, ImageTextLocationDataset
from zoo.data.datamodules import EmbeddedSplits


def _datamodule(root, **kwargs) -> ImageTextLocationDataModule:
    return ImageTextLocationDataModule(str(root), batch_size=4, image_size=16, **kwargs)


def test_batch_contract(table_root):
    dm = _datamodule(table_root)
    assert dm.class_names == CLASSES
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))  # not shuffled
    batch = dm.on_after_batch_transfer(batch, 0)  # normalization, as after transfer
    assert batch["image"].shape == (4, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert abs(batch["image"].mean()) < 3  # normalized, not 0..255
    assert batch["caption"][0] == "a satellite image of a forest."
    assert batch["location"].shape == (4, 2) and batch["location"].dtype == torch.float32
    assert batch["location"][1].tolist() == [-30.0, -60.0]
    assert batch["label"].tolist() == [0, 1, 0, 1]
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    tok = dm.tokenizer
    assert (
        tok.decode(batch["input_ids"][0], skip_special_tokens=True)
        == "a satellite image of a forest ."
    )
    assert tok.unk_token_id not in batch["input_ids"]


def test_skyscript_table_without_location(tmp_path):
    root = write_table_dataset(tmp_path / "sky", location=False)
    dm = _datamodule(root)
    with pytest.warns(UserWarning, match="no 'lat'/'lon'"):
        dm.setup("fit")
    assert "location" not in next(iter(dm.train_dataloader()))


def test_missing_root_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist.*EmbeddedDataModule"):
        ImageTextLocationDataset(tmp_path / "does-not-exist")


def test_corrupt_image_names_the_file(table_root):
    (table_root / "images" / "train_1.png").write_bytes(b"not a png")
    ds = ImageTextLocationDataset(table_root, "train", CLASSES)
    ds[0]
    with pytest.raises(RuntimeError, match=r"train_1\.png.*line 3 of .*train\.csv.*corrupt"):
        ds[1]


def test_missing_image_names_the_file(table_root):
    (table_root / "images" / "train_2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train_2\.png is missing"):
        ImageTextLocationDataset(table_root, "train", CLASSES)[2]


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("lat", 200.0, r"latitude 200.0 on line\(s\) 4 .*\[-90, 90\]"),
        ("lon", -181.0, r"longitude -181.0 on line\(s\) 4 .*\[-180, 180\]"),
        ("lat", "north", r"latitude 'north'"),
        ("title", "", r"caption missing on line\(s\) 4 \(column 'title'\)"),
        ("label", "moon", r"label 'moon' on line\(s\) 4 is not one of"),
    ],
)
def test_bad_rows_name_file_line_and_column(table_root, column, value, message):
    path = table_root / "train.csv"
    table = pd.read_csv(path)
    table[column] = table[column].astype(object)
    table.loc[2, column] = value
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=message) as error:
        ImageTextLocationDataset(table_root, "train", CLASSES)
    assert "train.csv" in str(error.value)


def test_table_without_caption_column(table_root):
    pd.read_csv(table_root / "val.csv").drop(columns="title").to_csv(table_root / "val.csv")
    with pytest.raises(ValueError, match="'filepath' and 'title'"):
        ImageTextLocationDataset(table_root, "val", CLASSES)


def test_conversation_task_filter_that_keeps_nothing_is_an_error(tmp_path):
    from zoo.data import EmbeddedConversationDataModule

    dm = EmbeddedConversationDataModule(
        str(tmp_path), splits=EmbeddedSplits(4, 2, 2), tasks=["captions"]
    )  # a typo of "caption"
    dm.prepare_data()
    with pytest.raises(
        ValueError, match=r"conversations_train\.json: no record has a task in \['captions'\]"
    ):
        dm.setup("fit")
