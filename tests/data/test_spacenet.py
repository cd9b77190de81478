"""SpaceNet 1 building segmentation datamodule on fake GeoTIFF chips and GeoJSON footprints."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torchgeo.datasets.errors import DatasetNotFoundError

from tests.data.fakes import fake_datamodule
from zoo.data.spacenet import SpaceNet1SegmentationDataModule, random_dihedral

DATA = Path(__file__).parent / "spacenet1"
TRAIN = "SN1_buildings/train"


def _dm(root: Path = DATA, image_size: int = 32, **kwargs) -> SpaceNet1SegmentationDataModule:
    return SpaceNet1SegmentationDataModule(str(root), batch_size=2, image_size=image_size, **kwargs)


def _chip(dm: SpaceNet1SegmentationDataModule, split: str, j: int) -> str:
    """File name of the j-th chip of a split (a random_split Subset of the train folder)."""
    return Path(dm.dataset.images[getattr(dm, f"{split}_dataset").indices[j]]).name


def _box(size: int, rows: slice, cols: slice) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[rows, cols] = 1
    return mask


def test_batch_contract_and_footprints():
    dm = _dm()
    assert dm.class_names == ["background", "building"] and dm.num_classes == 2
    dm.setup("fit")
    dm.setup("test")
    # torchgeo's split of the one labelled folder: 70/10/20 % with seed 0
    assert (len(dm.train_dataset), len(dm.val_dataset), len(dm.test_dataset)) == (7, 1, 2)
    assert [_chip(dm, "test", j) for j in (0, 1)] == [
        "3band_AOI_1_RIO_img7.tif",
        "3band_AOI_1_RIO_img3.tif",
    ]
    raw = next(iter(dm.test_dataloader()))
    assert set(raw) == {"image", "semantic_mask"}
    pixels = raw["image"].clone()
    batch = dm.on_after_batch_transfer(raw, 0)
    image, mask = batch["image"], batch["semantic_mask"]
    assert image.dtype == torch.float32 and image.shape == (2, 3, 32, 32)
    assert mask.dtype == torch.long and mask.shape == (2, 32, 32)
    assert -2.2 <= image.min() and image.max() <= 2.7  # 8-bit RGB normalized
    # img7 (32x32): the polygon covers pixel rows 8-15 and columns 4-19, the red roof
    building = _box(32, slice(8, 16), slice(4, 20))
    assert torch.equal(mask[0], building)
    assert torch.equal(pixels[0, 0] == 200, building.bool())
    # img3 is 30 rows tall: rows stretch by 32/30 (rows 8-15 cover 8.5-17.1: centres 9-16)
    assert torch.equal(mask[1], _box(32, slice(9, 17), slice(4, 20)))
    # img9 has no building (an empty FeatureCollection)
    assert _chip(dm, "val", 0) == "3band_AOI_1_RIO_img9.tif"
    val = next(iter(dm.val_dataloader()))
    assert val["semantic_mask"].sum() == 0 and "mask" not in val


def test_resized_mask_is_nearest_and_square():
    dm = _dm(image_size=16)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16)
    assert torch.equal(batch["semantic_mask"][0], _box(16, slice(4, 8), slice(2, 10)))
    assert set(batch["semantic_mask"].unique().tolist()) == {0, 1}


def test_split_is_reproducible_and_predict_has_no_labels():
    first, second = _dm(), _dm()
    first.setup("fit")
    second.setup("test")
    assert first.test_dataset.indices == second.test_dataset.indices
    second.setup("predict")
    batch = next(iter(second.predict_dataloader()))
    assert set(batch) == {"image"} and batch["image"].shape == (2, 3, 32, 32)


def test_training_augmentation_moves_image_and_mask_together():
    dm = _dm()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    roof = batch["image"][:, 0] == 200
    torch.manual_seed(0)
    moved = random_dihedral({k: v.clone() for k, v in batch.items()})
    assert torch.equal(moved["image"][:, 0] == 200, moved["semantic_mask"].bool())
    assert torch.equal(roof, batch["semantic_mask"].bool())
    assert dm.on_after_batch_transfer(dict(batch), 0)["semantic_mask"] is batch["semantic_mask"]


def test_missing_root_says_how_to_get_the_data(tmp_path):
    root = tmp_path / "no-spacenet"
    with pytest.raises(DatasetNotFoundError, match="s3://spacenet-dataset") as error:
        _dm(root).setup("fit")
    assert str(root) in str(error.value) and "download=True" in str(error.value)
    assert not root.exists()
    root.mkdir()  # exists but empty: torchgeo's message, with the hint
    with pytest.raises(DatasetNotFoundError, match=rf"{root}.*AWS CLI"):
        _dm(root).setup("fit")


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA, tmp_path / "sn1", ignore=shutil.ignore_patterns("*.py")))


def _load_all(root: Path) -> None:
    dm = _dm(root)
    dm.setup("fit")
    for i in range(len(dm.dataset)):
        dm.dataset[i]


def test_corrupt_geojson_names_the_file(tmp_path):
    root = _copy(tmp_path)
    (root / TRAIN / "geojson" / "Geo_AOI_1_RIO_img4.geojson").write_text('{"type": "Feature')
    with pytest.raises(ValueError, match=r"Geo_AOI_1_RIO_img4\.geojson.*not valid GeoJSON"):
        _load_all(root)


def test_wrong_band_count_names_the_chip(tmp_path):
    root = _copy(tmp_path)
    path = root / TRAIN / "3band" / "3band_AOI_1_RIO_img2.tif"
    with rasterio.open(path) as f:
        profile = f.profile | {"count": 1}
    with rasterio.open(path, "w", **profile) as f:
        f.write(np.zeros((1, profile["height"], profile["width"]), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"3band_AOI_1_RIO_img2\.tif has 1 band\(s\)"):
        _load_all(root)


def test_chip_without_label_is_an_error(tmp_path):
    root = _copy(tmp_path)
    (root / TRAIN / "geojson" / "Geo_AOI_1_RIO_img6.geojson").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 3band chip\(s\) without a GeoJSON.*img6\.tif"):
        _dm(root).setup("fit")


def test_config_parses_and_loads_the_fake_data():
    dm = fake_datamodule("spacenet1.yaml", "spacenet1")
    assert isinstance(dm, SpaceNet1SegmentationDataModule) and dm.image_size == 448
    dm.setup("fit")
    assert len(dm.train_dataset) == 7
