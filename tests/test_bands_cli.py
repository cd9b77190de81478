"""Issue 24's acceptance through the command line: a 4-band (NAIP-like RGB + NIR, uint8) and a
13-band (Sentinel-2-like, uint16) GeoTIFF dataset written here train FLAVARS a few steps with
their bands chosen (``zoo stats`` first), the checkpoint keeps the band names and channel count
(``zoo.load``'s transform takes an N-band array), and ``zoo embed`` runs on the GeoTIFFs; the
error cases name the file."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import torch
import yaml

import zoo
from tests.geotiffs import NAIP_BANDS, SENTINEL2_BANDS, write_band_table
from tests.overrides import two_step_trainer
from zoo.data.images import ImageFolderDataModule
from zoo.data.statistics import STATS_FILE
from zoo.main import main

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "flavars.yaml")
IMAGES = str(ROOT / "configs" / "data" / "images.yaml")

#: name -> (bands in the file, dtype, band names in the file, the bands chosen)
DATASETS = {
    "naip": (4, "uint8", NAIP_BANDS, ["R", "G", "B", "NIR"]),
    "sentinel2": (13, "uint16", SENTINEL2_BANDS, [2, 3, 4, 8, 11, 12]),
}


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.chdir(tmp_path)


def _override(folder: Path, data: Path, bands: list | None) -> Path:
    """Two training steps of a small FLAVARS on the table with ``bands``; the tokenizer is the
    image folder's (saved once), so ``zoo embed`` tokenizes alike."""
    path = folder / "override.yaml"
    runs = folder / "runs"
    tokenizer = folder / "tokenizer"
    if not tokenizer.is_dir():
        ImageFolderDataModule(task="image_text").tokenizer.save_pretrained(tokenizer)
    path.write_text(
        yaml.safe_dump(
            {
                "trainer": two_step_trainer(runs),
                "model": {"init_args": {"embed_dim": 32, "fusion": {"width": 32, "layers": 1}}},
                "data": {
                    "class_path": "ImageTextLocationDataModule",
                    "init_args": {
                        "root": str(data),
                        "bands": bands,
                        "image_size": 32,
                        "batch_size": 4,
                        "tokenizer": str(tokenizer),
                    },
                },
            }
        )
    )
    return path


@pytest.fixture(scope="module", params=sorted(DATASETS))
def fitted(request, tmp_path_factory):
    """``zoo stats`` then a two-step FLAVARS fit on the dataset, with its bands chosen."""
    import wandb

    name = request.param
    count, dtype, descriptions, bands = DATASETS[name]
    folder = tmp_path_factory.mktemp(name)
    data = write_band_table(folder / "data", count, dtype, descriptions=descriptions)
    override = _override(folder, data, bands)
    stats = main(["stats", "--config", CONFIG, "--config", str(override), "--no_progress"])
    assert stats == data / STATS_FILE
    main(["fit", "--config", CONFIG, "--config", str(override)])
    wandb.finish()
    (last,) = (folder / "runs").rglob("last.ckpt")
    return name, data, bands, last


@pytest.mark.slow  # two fits (one per dataset) of ~30 s each, shared with the next test
def test_fit_keeps_bands_and_statistics_in_the_checkpoint(fitted):
    name, data, bands, last = fitted
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["in_channels"] == len(bands)
    model, transform, _ = zoo.load(last)
    stats = yaml.safe_load((data / STATS_FILE).read_text())  # JSON is YAML
    expected_names = tuple(bands) if name == "naip" else tuple(f"band {b}" for b in bands)
    assert model.preprocessing.bands == expected_names
    assert model.preprocessing.mean == pytest.approx(stats["mean"])
    assert model.preprocessing.std == pytest.approx(stats["std"])
    image = np.random.default_rng(0).uniform(0, 255, (len(bands), 40, 40)).astype(np.float32)
    pixels = transform(image)
    assert pixels.shape == (len(bands), 32, 32)
    assert model.encode_image(pixels[None]).shape == (1, 32)
    with pytest.raises(ValueError, match=f"has 3 bands but the model reads {len(bands)}"):
        transform(image[:3])


@pytest.mark.slow
def test_embed_runs_on_the_geotiffs(fitted, tmp_path):
    """``zoo embed`` over the GeoTIFF folder with the same bands, raw values and statistics
    (the training data's band_stats.json copied beside the images)."""
    name, data, bands, last = fitted
    shutil.copy(data / STATS_FILE, data / "images" / STATS_FILE)
    output = tmp_path / "embeddings.parquet"
    args = ["embed", "--config", CONFIG, "--config", IMAGES, "--ckpt_path", str(last)]
    args += ["--output", str(output), "--no_progress", f"--data.init_args.root={data / 'images'}"]
    args += [f"--data.init_args.bands={bands}", "--data.init_args.percentiles=null"]
    args += ["--data.init_args.image_size=32", "--model.init_args.embed_dim=32"]
    args += ["--model.init_args.fusion.width=32", "--model.init_args.fusion.layers=1"]
    args += [f"--data.init_args.tokenizer={last.parents[4] / 'tokenizer'}"]
    main(args)
    frame = gpd.read_parquet(output)
    assert len(frame) == 24 and frame.crs.to_epsg() == 4326
    assert np.stack(frame["image_embedding"]).shape == (24, 32)
    (data / "images" / STATS_FILE).unlink()


def test_band_errors_name_the_file(tmp_path):
    """13 bands with ``bands: null``, and a band name the files lack: errors naming the file
    (``zoo stats`` and ``zoo fit`` read the data alike)."""
    data = write_band_table(
        tmp_path / "s2", 13, "uint16", per_split=2, descriptions=SENTINEL2_BANDS
    )
    override = _override(tmp_path, data, None)
    with pytest.raises(ValueError, match=r"train_0\.tif .*has 13 band\(s\).*\[4, 3, 2\]"):
        main(["stats", "--config", CONFIG, "--config", str(override), "--no_progress"])
    with pytest.raises(ValueError, match=r"train_0\.tif .*has 13 band\(s\)"):
        main(["fit", "--config", CONFIG, "--config", str(override)])
    override = _override(tmp_path, data, ["B04", "B03", "NIR"])
    with pytest.raises(ValueError, match=r"train_0\.tif.*band name 'NIR' is not one of"):
        main(["stats", "--config", CONFIG, "--config", str(override), "--no_progress"])
