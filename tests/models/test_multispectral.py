"""The embedded dataset's multispectral scenes and the multispectral default config (issue 24):
5-band GeoTIFFs with plausible NIR / SWIR signatures, statistics computed once, and FLAVARS
learning from them through ``configs/flavars_multispectral.yaml``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from zoo.data import embedded
from zoo.data.embedded.dataset import make_sample
from zoo.data.embedded.spectra import MULTISPECTRAL_BANDS, _scores, extra_bands
from zoo.data.statistics import STATS_FILE
from zoo.main import main

ROOT = Path(__file__).parents[2]
CONFIG = str(ROOT / "configs" / "flavars_multispectral.yaml")
NUM_CLASSES = len(embedded.SCENE_CLASSES)


def test_extra_bands_have_the_materials_signatures():
    """Over the painted scenes: NIR well above red on vegetation and far below it on water's
    visible brightness; SWIR below NIR on vegetation and dark on snow."""
    veg, water, snow = [], [], []
    for index in range(20):
        sample = make_sample(0, "train", index, 64)
        rgb = sample.pixels.astype(float)
        nir, swir = np.moveaxis(extra_bands(sample.pixels, np.random.default_rng(index)), -1, 0)
        s = _scores(rgb)
        for mask, into in ((s["vegetation"] > 0.9, veg), (s["water"] > 0.9, water)):
            if mask.any():
                into.append((rgb[mask].mean(0), nir[mask].mean(), swir[mask].mean()))
        if (s["snow"] > 0.9).any():
            m = s["snow"] > 0.9
            snow.append((rgb[m].mean(), swir[m].mean()))
    assert veg and water and snow
    for (r, _, _), nir, swir in veg:
        assert nir > 2.5 * r and swir < nir
    for visible, nir, _ in water:
        assert nir < 0.5 * visible.mean()
    for visible, swir in snow:
        assert swir < 0.5 * visible


def test_multispectral_files_are_five_band_geotiffs_with_rgb_unchanged(tmp_path: Path):
    root = embedded.generate(
        tmp_path / "ms", num_train=4, num_val=1, num_test=1, progress=False, multispectral=True
    )
    table = (root / "train.csv").read_text().splitlines()
    assert table[1].split(",")[0] == "images/train/train_00000.tif"
    with rasterio.open(root / "images" / "train" / "train_00000.tif") as src:
        assert src.count == 5 and src.descriptions == MULTISPECTRAL_BANDS
        assert src.crs.to_epsg() == 4326
        rgb = src.read([1, 2, 3]).transpose(1, 2, 0)
    assert np.array_equal(rgb, make_sample(0, "train", 0, 64).pixels)  # the RGB scene as always
    assert json.loads((root / "metadata.json").read_text())["bands"] == list(MULTISPECTRAL_BANDS)


@pytest.mark.slow  # one fit of 8 short epochs over 5-band GeoTIFFs
def test_multispectral_config_learns_beyond_chance(tmp_path: Path, monkeypatch):
    """Chance: zero-shot and k-NN 1/10 (10 balanced scene classes).

    Measured (configs/flavars_multispectral.yaml at 32 px, 480 training scenes, seed 0,
    8 epochs of 15 steps): zero-shot 0.825, k-NN 0.869 (the test asks for 3x chance, 0.3); 31 min
    on the shared 2-core machine at a load average near 28 (the RGB twin's fit takes ~17 s
    alone). The statistics come from the training split's band_stats.json into the checkpoint.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 8,
                    "logger": False,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                    "num_sanity_val_steps": 0,
                    "default_root_dir": str(tmp_path / "runs"),
                    "callbacks": [],
                },
                "model": {"init_args": {"embed_dim": 64, "fusion": {"width": 64, "layers": 1}}},
                "data": {
                    "init_args": {
                        "root": str(tmp_path / "data"),
                        "splits": {"train": 480, "val": 160, "test": 16},
                        "image_size": 32,
                        "batch_size": 32,
                    }
                },
            }
        )
    )
    cli = main(["fit", "--config", CONFIG, "--config", str(override)])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert cli.model.encoders.in_channels == 5
    stats = json.loads(next((tmp_path / "data").rglob(STATS_FILE)).read_text())
    assert cli.model.preprocessing.bands == MULTISPECTRAL_BANDS
    assert cli.model.preprocessing.mean == pytest.approx(stats["mean"])
    print(
        f"multispectral zero-shot {metrics['val_zero_shot_acc']:.3f} k-NN {metrics['val_knn_acc']:.3f}"
    )
    assert metrics["val_zero_shot_acc"] > 3 / NUM_CLASSES
    assert metrics["val_knn_acc"] > 3 / NUM_CLASSES
