"""bench/raster_memory.py at a toy size: a tiled scene, ``zoo embed`` in a fresh process, its
peak RSS and the provenance of its output (no timing is asserted)."""

from __future__ import annotations

import hashlib
import json

import rasterio
import torch

import zoo
from bench import raster_memory
from zoo.provenance import read_geoparquet_provenance


def test_scene_is_tiled_with_overviews(tmp_path):
    path = raster_memory.write_scene(tmp_path / "scene.tif", 1024)
    with rasterio.open(path) as src:
        assert src.profile["tiled"] and src.block_shapes[0] == (512, 512)
        assert src.overviews(1) == [2, 4] and src.count == 3 and src.dtypes[0] == "uint8"
        assert src.read(1, window=rasterio.windows.Window(0, 0, 64, 64)).std() > 0


def test_toy_run_reports_peak_memory_per_process(tmp_path):
    ckpt = tmp_path / "flavars.pt"
    torch.save(zoo.create_model("flavars").state_dict(), ckpt)
    output, workdir = tmp_path / "report.json", tmp_path / "work"
    report = raster_memory.main(
        [
            "--sizes",
            "96",
            "--ckpt_path",
            str(ckpt),
            "--output",
            str(output),
            "--workdir",
            str(workdir),
        ]
    )
    (result,) = report["results"]
    assert result["size"] == 96 and result["rows"] == 4  # 96 px in 64 px chips: 2 x 2
    assert 100 < result["peak_rss_mb"] < 10_000 and report["ratio"] == 1.0
    assert json.loads(output.read_text()) == report and report["meta"]["date"]
    record = read_geoparquet_provenance(workdir / "embeddings_96.parquet")
    assert record["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record["model"] == "zoo.models.flavars.FLAVARS" and record["chip_size"] == 64
