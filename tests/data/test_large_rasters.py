"""Scenes larger than memory: windowed chip reads, shared stretch limits, blended stitching."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.io import DatasetReader

from tests.geotiffs import write_utm_geotiff
from zoo.allocator import fixed_mmap_threshold
from zoo.data.images import ImageFolderDataset
from zoo.data.rasters import (
    Window,
    blend_weights,
    chip_windows,
    read_raster,
    stitch,
    stretch_limits,
)


def _rgb_cog(path: Path, size: int = 300) -> Path:
    data = np.random.default_rng(1).integers(0, 256, (3, size, size), dtype=np.uint8)
    profile = dict(driver="COG", height=size, width=size, count=3, dtype="uint8", blocksize=128)
    with rasterio.open(
        path, "w", crs="EPSG:32633", transform=rasterio.Affine(10, 0, 5e5, 0, -10, 5e6), **profile
    ) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("kind", ["uint16", "uint8"])
def test_a_window_read_is_the_slice_of_the_whole_read(tmp_path: Path, kind: str):
    if kind == "uint16":
        path = write_utm_geotiff(tmp_path / "s2.tif", nodata_corner=10)
    else:
        path = _rgb_cog(tmp_path / "rgb.tif")
    whole = read_raster(path, bands=[3, 2, 1])
    with rasterio.open(path) as src:
        height, width = src.shape
    for w in chip_windows(height, width, 64, overlap=16):
        part = read_raster(path, bands=[3, 2, 1], window=w)
        rows, cols = slice(w.row, w.row + w.height), slice(w.col, w.col + w.width)
        assert np.array_equal(part.pixels, whole.pixels[:, rows, cols])
        assert np.array_equal(part.valid, whole.valid[rows, cols])
        assert part.transform == whole.transform @ rasterio.Affine.translation(w.col, w.row)


def test_stretch_limits_of_a_large_file_come_from_a_decimated_read(tmp_path: Path):
    path = write_utm_geotiff(tmp_path / "s2.tif", height=200, width=300)
    exact = stretch_limits(path, [1, 2, 3])
    approx = stretch_limits(path, [1, 2, 3], max_pixels=100 * 150)  # every other pixel
    assert exact.shape == approx.shape == (3, 2)
    assert np.allclose(approx, exact, rtol=0.03) and not np.array_equal(approx, exact)
    assert stretch_limits(_rgb_cog(tmp_path / "rgb.tif"), None) is None  # uint8: no stretch


def test_folder_chips_are_windowed_reads(tmp_path: Path, monkeypatch):
    _rgb_cog(tmp_path / "rgb.tif")
    write_utm_geotiff(tmp_path / "s2.tif")
    reads = []
    read = DatasetReader.read

    def spy(self, indexes=None, *args, **kwargs):
        reads.append((Path(self.name).name, kwargs.get("window"), kwargs.get("out_shape")))
        return read(self, indexes, *args, **kwargs)

    monkeypatch.setattr(DatasetReader, "read", spy)
    ds = ImageFolderDataset(tmp_path, image_size=32, chip_size=64, overlap=8)
    for i in range(len(ds)):
        ds[i]
    chips = [r for r in reads if r[2] is None]
    assert len(chips) == len(ds) and all(w is not None and w.width <= 64 for _, w, _ in chips)
    # The uint16 file's stretch limits: one (full-size, it is small) read for all its chips.
    assert [r[0] for r in reads if r[2] is not None] == ["s2.tif"]


def test_exclude_drops_finished_files(tmp_path: Path):
    for name in ("a.tif", "b.tif"):
        write_utm_geotiff(tmp_path / name, height=40, width=40)
    ds = ImageFolderDataset(tmp_path, image_size=32)
    assert len(ds) == 8 and ds.exclude(["a.tif", "c.tif"]) == 1
    assert len(ds) == 4 and {ds[i]["path"] for i in range(4)} == {"b.tif"}


def test_blended_stitch_of_a_constant_has_no_seam():
    windows = chip_windows(100, 150, 40, overlap=12)
    for value in (1.0, 0.7):
        chips = [np.full((1, 20, 20), value, dtype=np.float32) for _ in windows]  # resized 2x
        out = stitch(chips, windows, 100, 150, blend="cosine")
        assert np.allclose(out, value, rtol=0, atol=1e-6)
    assert (stitch(chips, windows, 100, 150, blend="cosine") >= 0.5).all()


def test_blended_stitch_without_overlap_is_the_plain_stitch():
    full = np.random.default_rng(0).random((2, 50, 70)).astype(np.float32)
    windows = chip_windows(50, 70, 25, overlap=0)
    windows = [w for w in windows if w.row in (0, 25) and w.col in (0, 25)]  # a 2x2 tiling
    chips = [full[:, w.row : w.row + w.height, w.col : w.col + w.width] for w in windows]
    plain = stitch(chips, windows, 50, 50)
    assert np.array_equal(stitch(chips, windows, 50, 50, blend="cosine"), plain)
    assert np.array_equal(plain, full[:, :50, :50])
    assert all((w == 1).all() for w in blend_weights(windows))


def test_blend_weights_taper_across_the_overlap():
    windows = [Window(0, 0, 4, 8), Window(0, 4, 4, 8)]  # 4 shared columns
    left, right = blend_weights(windows)
    assert np.allclose(left[:, 4:] + right[:, :4], 1.0)  # a partition of unity on the overlap
    assert (np.diff(left[0, 4:]) < 0).all() and (left[:, :4] == 1).all()
    assert (left > 0).all() and (right > 0).all()
    # Two chips disagree on their overlap: the blend moves smoothly from one to the other.
    out = stitch([np.ones((1, 4, 8)), np.zeros((1, 4, 8))], windows, 4, 12, blend="cosine")
    assert (np.diff(out[0, 0]) <= 0).all() and out[0, 0, 0] == 1 and out[0, 0, -1] == 0
    with pytest.raises(ValueError, match="blend"):
        stitch([np.ones((1, 4, 8))], windows[:1], 4, 8, blend="hann")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_mmap_threshold_is_fixed_on_glibc():
    assert fixed_mmap_threshold() is True  # glibc accepted it (bench/raster_memory.py: the effect)
