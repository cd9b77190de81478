"""Bands (issue 24): one rule for which bands a file gives, never a silent choice; every reader
reads N-band GeoTIFFs (uint8, uint16, float) and RGB files as before; per-band statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from tests.geotiffs import (
    NAIP_BANDS,
    SENTINEL2_BANDS,
    write_band_table,
    write_multiband_geotiff,
)
from zoo.data.bands import BandChoice, read_bands
from zoo.data.datamodules import ImageTextLocationDataModule
from zoo.data.image_text import load_image
from zoo.data.rasters import read_raster
from zoo.data.scene_benchmarks import SceneTableDataset
from zoo.data.statistics import STATS_FILE, band_statistics, write_statistics


def test_rgb_files_read_bit_identical_to_pil(tmp_path: Path):
    """An RGB model's PNG / JPEG / grey / RGBA files: exactly PIL's convert("RGB") as before."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    files = {
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]]), "RGBA"),
        "grey.png": Image.fromarray(rgb[..., 0]),
        "photo.jpg": Image.fromarray(rgb),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
        with Image.open(tmp_path / name) as img:
            expected = np.asarray(img.convert("RGB")).transpose(2, 0, 1).astype(np.float32)
        got = load_image(tmp_path / name)
        assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(expected)), name
    # A 3-band uint8 GeoTIFF (rasterio) gives its own values, as PIL gave them.
    path = write_multiband_geotiff(tmp_path / "rgb.tif", 3, "uint8")
    with rasterio.open(path) as src:
        assert torch.equal(load_image(path), torch.from_numpy(src.read().astype(np.float32)))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_n_band_geotiffs_give_the_chosen_bands_raw(tmp_path: Path, dtype: str):
    """uint8 as it is, uint16 reflectance and floats as raw float32 (the statistics normalize)."""
    path = write_multiband_geotiff(tmp_path / "s2.tif", 13, dtype, descriptions=SENTINEL2_BANDS)
    with rasterio.open(path) as src:
        expected = src.read([4, 3, 2, 8]).astype(np.float32)
    for bands in ([4, 3, 2, 8], ["B04", "B03", "B02", "B08"]):
        got = load_image(path, bands=BandChoice.of(bands))
        assert got.shape == (4, 32, 32) and torch.equal(got, torch.from_numpy(expected))
    if dtype != "uint8":
        assert read_raster(path, [4, 3, 2], percentiles=None).pixels.max() == expected[:3].max()


def test_never_a_silent_band_choice(tmp_path: Path):
    """13 bands with no choice, 2 bands for RGB, a band name the file lacks: errors naming the
    file, its band count, the model's channels and how to choose."""
    s2 = write_multiband_geotiff(tmp_path / "s2.tif", 13, descriptions=SENTINEL2_BANDS)
    with pytest.raises(ValueError, match=r"s2\.tif .*has 13 band\(s\).*the 3 the model reads") as e:
        load_image(s2, " (line 2 of train.csv)")
    assert "[4, 3, 2]" in str(e.value) and "line 2 of train.csv" in str(e.value)
    with pytest.raises(ValueError, match=r"s2\.tif has 13 band\(s\).*the 4 the model reads"):
        read_bands(s2, BandChoice(None, 4))
    with pytest.raises(ValueError, match=r"s2\.tif has 13 band\(s\)"):
        read_raster(s2)
    two = write_multiband_geotiff(tmp_path / "two.tif", 2)
    with pytest.raises(ValueError, match=r"two\.tif has 2 band\(s\).*fewer bands"):
        load_image(two)
    with pytest.raises(ValueError, match=r"s2\.tif: band name 'NIR' is not one of .*B08"):
        load_image(s2, bands=BandChoice.of(["B04", "NIR"]))
    with pytest.raises(ValueError, match=r"s2\.tif has bands 1\.\.13; bands \[14\] do not exist"):
        load_image(s2, bands=BandChoice.of([14]))
    # A file with exactly the model's bands needs no choice; grey is repeated for RGB.
    naip = write_multiband_geotiff(tmp_path / "naip.tif", 4, "uint8")
    assert load_image(naip, bands=BandChoice(None, 4)).shape == (4, 32, 32)
    grey = write_multiband_geotiff(tmp_path / "grey.tif", 1, "uint8")
    assert load_image(grey).shape == (3, 32, 32)


def test_scene_benchmark_reader_takes_bands(tmp_path: Path):
    path = write_multiband_geotiff(tmp_path / "a.tif", 13, descriptions=SENTINEL2_BANDS)
    dataset = SceneTableDataset(tmp_path, ["a.tif"], [0], 16, "test benchmark")
    with pytest.raises(ValueError, match=r"a\.tif has 13 band\(s\)"):
        dataset[0]
    dataset.band_choice = BandChoice.of(["B04", "B03", "B02", "B08"])
    assert dataset[0]["image"].shape == (4, 16, 16)
    with rasterio.open(path) as src:  # raw reflectance, not stretched nor clipped to 255
        expected = torch.from_numpy(src.read([4, 3, 2, 8]).astype(np.float32))
    assert dataset[0]["image"].amax() > 255
    assert torch.allclose(dataset[0]["image"].mean((1, 2)), expected.mean((1, 2)), rtol=1e-2)


def _datamodule(root: Path, **kwargs) -> ImageTextLocationDataModule:
    return ImageTextLocationDataModule(str(root), image_size=16, batch_size=4, **kwargs)


def test_datamodule_bands_statistics_and_preprocessing(tmp_path: Path):
    """bands -> num_channels and the batch's C; N bands need statistics (an error naming
    `zoo stats` until they exist); stored ones are used, named, and reach preprocessing."""
    root = write_band_table(tmp_path / "naip", 4, "uint16", descriptions=NAIP_BANDS)
    dm = _datamodule(root, bands=["R", "G", "B", "NIR"])
    assert dm.num_channels == 4 and dm.band_names == NAIP_BANDS
    with pytest.raises(ValueError, match=r"reads 4 bands .* no per-band statistics: run `zoo"):
        dm.setup("fit")
    path = write_statistics(_datamodule(root, bands=["R", "G", "B", "NIR"]), progress=False)
    assert path == root / STATS_FILE
    stored = json.loads(path.read_text())
    # Against numpy over the training images as the loader gives them (resized to 16 px).
    dataset = _datamodule(root, bands=["R", "G", "B", "NIR"]).banded(dm._dataset("train"))
    images = np.stack([dataset[i]["image"].numpy() for i in range(len(dataset))]).astype(float)
    assert np.allclose(stored["mean"], images.mean((0, 2, 3)) / 255, rtol=1e-6)
    assert np.allclose(stored["std"], images.std((0, 2, 3)) / 255, rtol=1e-5)
    assert stored["bands"] == ["R", "G", "B", "NIR"] and stored["images"] == 8
    dm = _datamodule(root, bands=["R", "G", "B", "NIR"])
    dm.setup("fit")
    assert dm.statistics_source == str(path)
    assert dm.preprocessing.bands == NAIP_BANDS and dm.preprocessing.mean == tuple(stored["mean"])
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch["image"].shape == (4, 4, 16, 16)
    assert abs(float(batch["image"].mean())) < 0.5  # normalized by the data's own statistics
    # Statistics of other bands are not used; given ones must have one value per band.
    with pytest.raises(ValueError, match="no per-band statistics"):
        _datamodule(root, bands=[1, 2, 3, 4]).setup("fit")
    with pytest.raises(ValueError, match=r"mean has 3 and std 3 values but the data reads 4"):
        _datamodule(root, bands=[1, 2, 3, 4], mean=[0.1] * 3, std=[0.2] * 3).setup("fit")


def test_rgb_datamodule_keeps_imagenet_and_no_band_names(table_root: Path):
    """An RGB dataset without bands: ImageNet's statistics and preprocessing as before."""
    dm = ImageTextLocationDataModule(str(table_root), image_size=16, batch_size=2)
    assert dm.num_channels == 3 and dm.preprocessing.bands is None
    assert dm.statistics_source == "ImageNet's (the default)"
    assert dm.preprocessing.mean == (0.485, 0.456, 0.406)


def test_band_statistics_of_a_constant_band_is_unit_scale():
    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> dict:
            return {"image": torch.stack([torch.full((4, 4), 10.0), torch.arange(16.0).view(4, 4)])}

    stats = band_statistics(Images(), progress=False)
    assert stats["mean"] == pytest.approx([10 / 255, 7.5 / 255])
    assert stats["std"] == pytest.approx([1 / 255, float(np.arange(16.0).std()) / 255])
