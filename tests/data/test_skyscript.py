"""SkyScript (torchgeo's layout) with a coordinates file: batch contract, bad input, FLAVARS."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning import Trainer, seed_everything
from torchgeo.datasets.errors import DatasetNotFoundError

from tests.data.fakes import fake_datamodule
from zoo.data.skyscript import SkyScriptDataModule, SkyScriptDataset
from zoo.encoders.location import LocationSpec
from zoo.encoders.zoo_encoders import FusionSpec
from zoo.models import FLAVARS

DATA = Path(__file__).parent / "skyscript"
COORDINATES = DATA / "coordinates.csv"
TRAIN_CSV = "SkyScript_train_top30pct_filtered_by_CLIP_openai.csv"


def _dm(root: Path = DATA, coordinates: Path | None = COORDINATES, **kwargs) -> SkyScriptDataModule:
    coordinates_file = str(coordinates) if coordinates is not None else None
    return SkyScriptDataModule(str(root), coordinates_file, batch_size=4, image_size=16, **kwargs)


def test_batch_contract():
    dm = _dm()
    assert dm.class_names == []
    dm.setup("fit")
    raw = next(iter(dm.val_dataloader()))  # not shuffled
    pixels = raw["image"].clone()
    batch = dm.on_after_batch_transfer(raw, 0)
    assert set(batch) == {"image", "caption", "input_ids", "attention_mask", "index", "location"}
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (4, 3, 16, 16)
    assert -2.2 <= batch["image"].min() and batch["image"].max() <= 2.7
    assert batch["caption"][0] == "a satellite image of a forest"  # the 'title' column
    # the forest image is uniform green (30, 110, 40); JPEG within a few levels
    forest = torch.tensor([30.0, 110, 40])
    torch.testing.assert_close(pixels[0].mean(dim=(1, 2)), forest, atol=3, rtol=0)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    # joined on filepath: val line 2 is image n = 8 of data.py (lat -22.9 + 3.5 n, lon -43.2 + 10 n)
    assert batch["location"].dtype == torch.float32 and batch["location"].shape == (4, 2)
    torch.testing.assert_close(batch["location"][0], torch.tensor([5.1, 36.8]))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape
    decoded = dm.tokenizer.decode(ids[2], skip_special_tokens=True)
    assert decoded == "a satellite image of a parking lot"
    dm.setup("test")
    assert len(dm.test_dataset) == 4 and dm.test_dataset.has_location


def test_without_coordinates_warns_and_has_no_location():
    dm = _dm(coordinates=None)
    with pytest.warns(UserWarning, match="no coordinates_file.*location losses are switched off"):
        dm.setup("fit")
    assert "location" not in next(iter(dm.train_dataloader()))


def test_missing_root_says_how_to_get_the_data(tmp_path):
    root = tmp_path / "no-skyscript"
    with pytest.raises(DatasetNotFoundError, match="download=True") as error:
        _dm(root).setup("fit")
    assert str(root) in str(error.value) and "opendatasharing" in str(error.value)
    with pytest.raises(DatasetNotFoundError, match=rf"{TRAIN_CSV} is missing.*vocabulary"):
        _dm(root).vocabulary()  # what the tokenizer (linked to the model) is built from


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA, tmp_path / "sky", ignore=shutil.ignore_patterns("*.py")))


def test_row_without_coordinates_names_file_and_line(tmp_path):
    root = _copy(tmp_path)
    table = pd.read_csv(root / "coordinates.csv")
    missing = pd.read_csv(root / TRAIN_CSV)["filepath"][2]  # line 4 of the train CSV
    table[table["filepath"] != missing].to_csv(root / "coordinates.csv", index=False)
    dm = _dm(root, root / "coordinates.csv")
    with pytest.raises(
        ValueError,
        match=rf"coordinates\.csv has no coordinates for 1 row\(s\) of "
        rf".*{TRAIN_CSV}: line\(s\) 4, e.g. filepath '{missing}'",
    ):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("lat", 95.0, r"latitude 95.0 on line\(s\) 3 .*\[-90, 90\] degrees \(column 'lat'\)"),
        ("lon", "east", r"longitude 'east' on line\(s\) 3"),
        ("filepath", "images2/w100000_BR_17.jpg", r"'images2/w100000_BR_17.jpg' appears on line"),
    ],
)
def test_bad_coordinates_name_file_line_and_column(tmp_path, column, value, message):
    table = pd.read_csv(COORDINATES)
    table[column] = table[column].astype(object)
    table.loc[1, column] = value
    path = tmp_path / "coords.csv"
    table.to_csv(path, index=False)
    with pytest.raises(ValueError, match=message) as error:
        SkyScriptDataset(DATA, "val", path)
    assert "coords.csv" in str(error.value)


def test_corrupt_image_names_the_file(tmp_path):
    root = _copy(tmp_path)
    filepath = pd.read_csv(root / TRAIN_CSV)["filepath"][1]
    (root / filepath).write_bytes(b"not a jpeg")
    dataset = SkyScriptDataset(root, "train", root / "coordinates.csv", image_size=16)
    with pytest.raises(RuntimeError, match=rf"{Path(filepath).name}.*line 3 of .*{TRAIN_CSV}"):
        dataset[1]


def test_flavars_fits_on_skyscript_with_coordinates():
    seed_everything(0)
    dm = SkyScriptDataModule(str(DATA), str(COORDINATES), batch_size=4, image_size=32)
    model = FLAVARS(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        image_size=32,
        embed_dim=32,
        fusion=FusionSpec(width=32, layers=1),
        location=LocationSpec(hidden=32),
    )
    trainer = Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    metrics = trainer.callback_metrics
    assert "train_location_loss" in metrics and torch.isfinite(metrics["train_loss"])


def test_missing_caption_names_file_line_and_column(tmp_path):
    root = _copy(tmp_path)
    table = pd.read_csv(root / TRAIN_CSV)
    table.loc[3, "title"] = ""
    table.to_csv(root / TRAIN_CSV, index=False)
    message = rf"{TRAIN_CSV}: caption missing on line\(s\) 5 \(column 'title'\)"
    with pytest.raises(ValueError, match=message):
        SkyScriptDataset(root, "train")


def test_config_parses_and_loads_the_fake_data():
    dm = fake_datamodule("skyscript.yaml", "skyscript", coordinates_file=str(COORDINATES))
    assert isinstance(dm, SkyScriptDataModule) and dm.image_size == 224
    dm.setup("test")
    assert dm.test_dataset.has_location
