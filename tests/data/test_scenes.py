"""Scene classification datamodules (EuroSAT, RESISC45, UC Merced, PatternNet) on fake files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule
from torchgeo.datasets.errors import DatasetNotFoundError

from zoo.data.scenes import (
    EuroSATScenesDataModule,
    PatternNetScenesDataModule,
    RESISC45ScenesDataModule,
    UCMercedScenesDataModule,
    readable_class_name,
)

DATA = Path(__file__).parent
SIZE = 16


def _eurosat(c: int) -> tuple[float, float, float]:
    return (min(300 * (c + 1) / 3000, 1) * 255, 127.5, 0.0)


#: datamodule, fake-data folder, colour of class c in the fake images (see each data.py),
#: tolerance (JPEG is lossy), a known image file and its class name.
CASES = {
    "eurosat": (
        EuroSATScenesDataModule,
        _eurosat,
        0.0,
        "HerbaceousVegetation_2.tif",
        "herbaceous vegetation",
    ),
    "resisc45": (
        RESISC45ScenesDataModule,
        lambda c: (5 * c, 128, 255 - 5 * c),
        3.0,
        "baseball_diamond_002.jpg",
        "baseball diamond",
    ),
    "ucmerced": (
        UCMercedScenesDataModule,
        lambda c: (10 * c, 200 - 5 * c, 60),
        0.0,
        "mobilehomepark01.tif",
        "mobile home park",
    ),
    "patternnet": (
        PatternNetScenesDataModule,
        lambda c: (6 * c, 30, 250 - 6 * c),
        3.0,
        "christmas_tree_farm001.jpg",
        "christmas tree farm",
    ),
}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _dm(name: str, root: Path | None = None, **kwargs):
    cls = CASES[name][0]
    return cls(root=str(root or DATA / name), batch_size=4, image_size=SIZE, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_batch_contract(name):
    dm = _dm(name)
    _, colour, tolerance, known_file, known_class = CASES[name]
    assert dm.num_classes == len(dm.class_names)
    dm.setup("fit")
    dm.setup("test")
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        raw = next(iter(loader))
        assert set(raw) == {"image", "label"}
        labels = raw["label"]
        assert labels.dtype == torch.long and labels.shape == (4,)
        assert ((labels >= 0) & (labels < dm.num_classes)).all()
        pixels = raw["image"].clone()
        batch = dm.on_after_batch_transfer(raw, 0)
        image = batch["image"]
        assert image.dtype == torch.float32 and image.shape == (4, 3, SIZE, SIZE)
        # normalized with ImageNet mean/std of [0, 1] pixels
        torch.testing.assert_close(image, (pixels / 255 - IMAGENET_MEAN) / IMAGENET_STD)
        assert image.min() >= -2.2 and image.max() <= 2.7
        # content: the uniform colour of every image follows its label
        expected = torch.tensor([colour(int(c)) for c in labels], dtype=torch.float32)
        torch.testing.assert_close(pixels.mean(dim=(2, 3)), expected, atol=tolerance + 1e-4, rtol=0)
    # a known file carries the label of its class name
    dataset = dm.test_dataset.dataset if name == "patternnet" else dm.val_dataset
    files = {Path(p).name: label for p, label in dataset.samples}
    assert dm.class_names[files[known_file]] == known_class


def test_eurosat_rgb_scaling():
    dm = _dm("eurosat")
    dm.setup("fit")
    index = [Path(p).name for p, _ in dm.train_dataset.samples].index("SeaLake_1.tif")
    sample = dm.train_dataset[index]
    assert sample["image"].shape == (3, SIZE, SIZE)  # B04, B03, B02 of the 13 bands
    # B04 = 3000 -> 255, B03 = 1500 -> 127.5, B02 = 0 -> 0; clipped at 3000
    assert sample["image"][:, 0, 0].tolist() == [255.0, 127.5, 0.0]
    assert dm.class_names[int(sample["label"])] == "sea or lake"


def test_class_names_are_human_readable():
    assert readable_class_name("AnnualCrop") == "annual crop"
    assert readable_class_name("baseball_diamond") == "baseball diamond"
    assert EuroSATScenesDataModule().class_names[0] == "annual crop"  # before setup, no data
    assert len(RESISC45ScenesDataModule().class_names) == 45
    assert UCMercedScenesDataModule().class_names[6] == "dense residential"
    assert PatternNetScenesDataModule().num_classes == 38


def test_patternnet_split_is_reproducible():
    first, second = _dm("patternnet"), _dm("patternnet", val_split_pct=0.2, test_split_pct=0.2)
    first.setup("fit")
    second.setup("test")
    assert first.test_dataset.indices == second.test_dataset.indices
    parts = [set(getattr(first, f"{s}_dataset").indices) for s in ("train", "val", "test")]
    assert sum(map(len, parts)) == 76 and not (parts[0] & parts[1] or parts[0] & parts[2])


@pytest.mark.parametrize("name", CASES)
def test_missing_root_says_how_to_get_the_data(name, tmp_path):
    root = tmp_path / "not-here"
    with pytest.raises(DatasetNotFoundError, match="download=True") as error:
        _dm(name, root).setup("fit")
    message = str(error.value)
    assert str(root) in message and "https://hf.co/datasets/" in message
    assert not root.exists()


def _copy(name: str, tmp_path: Path) -> Path:
    ignore = shutil.ignore_patterns("*.py")
    return Path(shutil.copytree(DATA / name, tmp_path / name, ignore=ignore))


@pytest.mark.parametrize(
    ("name", "relative"),
    [
        ("eurosat", "ds/images/remote_sensing/otherDatasets/sentinel_2/tif/Forest/Forest_1.tif"),
        ("resisc45", "NWPU-RESISC45/beach/beach_001.jpg"),
        ("ucmerced", "UCMerced_LandUse/Images/beach/beach00.tif"),
        ("patternnet", "PatternNet/images/beach/beach001.jpg"),
    ],
)
def test_corrupt_image_names_the_file(name, relative, tmp_path):
    root = _copy(name, tmp_path)
    (root / relative).write_bytes(b"not an image")
    dm = _dm(name, root)
    dm.setup("fit")
    dataset = dm.train_dataset.dataset if name == "patternnet" else dm.train_dataset
    index = [Path(p).name for p, _ in dataset.samples].index(Path(relative).name)
    with pytest.raises(RuntimeError, match=rf"{Path(relative).name}.*corrupt"):
        dataset[index]


def test_eurosat_wrong_band_count_names_the_file(tmp_path):
    root = _copy("eurosat", tmp_path)
    path = root / "ds/images/remote_sensing/otherDatasets/sentinel_2/tif/River/River_1.tif"
    profile = {
        "driver": "GTiff",
        "dtype": "uint16",
        "count": 3,
        "width": 8,
        "height": 8,
        "crs": "EPSG:32631",
        "transform": rasterio.transform.from_origin(500000, 5000000, 10, 10),
    }
    with rasterio.open(path, "w", **profile) as f:
        f.write(np.zeros((3, 8, 8), dtype=np.uint16))
    dm = _dm("eurosat", root)
    dm.setup("fit")
    index = [Path(p).name for p, _ in dm.train_dataset.samples].index("River_1.tif")
    with pytest.raises(ValueError, match=r"River_1\.tif has 3 band\(s\); expected 13"):
        dm.train_dataset[index]


def test_split_file_naming_a_missing_image_is_an_error(tmp_path):
    root = _copy("resisc45", tmp_path)
    with (root / "resisc45-val.txt").open("a") as f:
        f.write("church_999.jpg\n")
    message = r"resisc45-val\.txt lists 1 image.*church_999\.jpg"
    with pytest.raises(FileNotFoundError, match=message):
        _dm("resisc45", root).setup("fit")
    (root / "NWPU-RESISC45" / "church" / "church_002.jpg").unlink()  # no val image of a class
    with pytest.raises(FileNotFoundError, match=rf"RESISC45 under {root} is incomplete.*church"):
        _dm("resisc45", root).setup("fit")


def test_unexpected_class_folder_is_an_error(tmp_path):
    root = _copy("ucmerced", tmp_path)
    shutil.copytree(root / "UCMerced_LandUse/Images/beach", root / "UCMerced_LandUse/Images/zoo")
    with pytest.raises(ValueError, match="found the class folders .*'zoo'"):
        _dm("ucmerced", root).setup("fit")


@pytest.mark.parametrize("name", CASES)
def test_config_parses_and_loads_the_fake_data(name):
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_path(str(DATA.parents[1] / "configs" / "data" / f"{name}.yaml"))
    assert config.data.init_args.root == f"data/{name}"
    config.data.init_args.root = str(DATA / name)
    dm = parser.instantiate(config).data
    assert type(dm) is CASES[name][0] and dm.image_size == 224
    dm.setup("test")
    assert len(dm.test_dataset) > 0
