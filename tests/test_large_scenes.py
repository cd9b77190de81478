"""GeoPix over a folder of scenes: a mask COG beside the vectors, provenance in every output,
and an interrupted run that continues where it stopped (docs/your-own-data.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
import yaml
from PIL import Image
from transformers import LlamaForCausalLM

from tests.geotiffs import write_utm_geotiff
from zoo.data.images import ImageFolderDataModule
from zoo.data.referring import seg_phrase
from zoo.main import main
from zoo.provenance import PROVENANCE_KEY, provenance, read_geoparquet_provenance, sha256_file

ROOT = Path(__file__).parents[1]


def test_provenance_hashes_the_checkpoint_once(tmp_path: Path, monkeypatch):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"weights" * 300_000)  # two 1 MiB blocks
    record = provenance(torch.nn.Linear(1, 1), ckpt, {"bands": [4, 3, 2], "chip_size": 224})
    assert record["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert record["model"] == "torch.nn.modules.linear.Linear" and record["bands"] == [4, 3, 2]
    assert record["checkpoint"] == str(ckpt) and record["zoo_version"]
    monkeypatch.setattr(Path, "open", lambda *a, **k: pytest.fail("hashed twice"))
    assert sha256_file(ckpt) == record["checkpoint_sha256"]  # cached
    assert provenance(torch.nn.Linear(1, 1), None, None)["checkpoint_sha256"] is None


@pytest.fixture
def answering(monkeypatch):
    """The GeoPix LLM answers every chip with one segmentation phrase; counts its calls."""
    tokenizer = ImageFolderDataModule(task="referring").tokenizer
    answer = tokenizer(f"sure, the building is {seg_phrase(2, 3)} [EOS]", add_special_tokens=False)
    calls = []

    def generate(self, inputs_embeds, attention_mask, **kwargs):
        calls.append(len(inputs_embeds))
        return torch.tensor(answer["input_ids"]).repeat(len(inputs_embeds), 1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)
    return calls


def _predict(tmp_path: Path, root: Path, out: Path, *extra: str) -> None:
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "logger": False,
                    "enable_progress_bar": False,
                    "callbacks": [
                        {
                            "class_path": "zoo.callbacks.MaskPredictionWriter",
                            "init_args": {"output_dir": str(out)},
                        }
                    ],
                },
                "data": {"init_args": {"root": str(root), "task": "referring", "overlap": 16}},
            }
        )
    )
    torch.manual_seed(0)
    main(
        [
            "predict",
            "--config",
            str(ROOT / "configs/geopix.yaml"),
            "--config",
            str(ROOT / "configs/data/images.yaml"),
            "--config",
            str(override),
            *extra,
        ]
    )


def test_geopix_writes_a_mask_cog_with_provenance_and_resumes(
    tmp_path: Path, monkeypatch, answering, caplog
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    root, out = tmp_path / "images", tmp_path / "out"
    write_utm_geotiff(root / "a.tif", height=64, width=100, nodata_corner=10)
    write_utm_geotiff(root / "b.tif", height=64, width=100, seed=1)
    _predict(tmp_path, root, out)
    chips = sum(answering)
    assert chips == 4  # two chips per file

    # The COG: the source's CRS and transform, the PNG's values, the provenance tag.
    with rasterio.open(root / "a.tif") as src, rasterio.open(out / "a" / "masks.tif") as cog:
        assert cog.crs == src.crs and cog.transform == src.transform
        assert cog.shape == src.shape and cog.count == 1 and cog.descriptions == ("the building",)
        assert cog.profile["tiled"] and cog.profile["compress"] == "deflate"
        png = np.array(Image.open(out / "a" / "mask_0.png"))
        assert np.array_equal(cog.read(1), png) and png.any() and not png[:10, :10].any()
        tagged = json.loads(cog.tags()[PROVENANCE_KEY])
    assert tagged["model"] == "zoo.models.geopix.GeoPix" and tagged["checkpoint"] is None
    assert {"bands": None, "chip_size": 64, "overlap": 16}.items() <= tagged.items()
    geojson = json.loads((out / "a" / "masks.geojson").read_text())
    assert geojson["provenance"] == tagged
    assert read_geoparquet_provenance(out / "masks.parquet") == tagged
    assert json.loads((out / "b" / "answer.json").read_text())["provenance"] == tagged

    # Interrupted before b was finished: its answer.json (written last) is missing.
    (out / "b" / "answer.json").unlink()
    first = (out / "a" / "answer.json").stat().st_mtime_ns
    caplog.set_level(logging.INFO)
    _predict(tmp_path, root, out)
    assert sum(answering) == chips + 2  # only b's chips again
    assert "1 of 2 files finished by an earlier run are skipped" in caplog.text
    assert (out / "a" / "answer.json").stat().st_mtime_ns == first
    assert (out / "b" / "answer.json").is_file()
    merged = gpd.read_parquet(out / "masks.parquet")
    assert sorted(merged["image"]) == ["a.tif", "b.tif"]


class _Trainer:
    world_size, global_rank, ckpt_path = 1, 0, None

    def __init__(self, datamodule: ImageFolderDataModule) -> None:
        self.datamodule = datamodule


def test_overwrite_redoes_finished_files_and_other_settings_are_refused(tmp_path: Path):
    from zoo.callbacks import MaskPredictionWriter

    root, out = tmp_path / "images", tmp_path / "out"
    for name in ("a.tif", "b.tif"):
        write_utm_geotiff(root / name, height=40, width=40)

    def writer(overlap: int, overwrite: bool = False) -> ImageFolderDataModule:
        dm = ImageFolderDataModule(root=str(root), task="referring", image_size=32, overlap=overlap)
        dm.setup("predict")
        MaskPredictionWriter(str(out), overwrite=overwrite).setup(
            _Trainer(dm), torch.nn.Linear(1, 1), "predict"
        )
        return dm

    record = provenance(torch.nn.Linear(1, 1), None, writer(0).chip_settings())
    (out / "a").mkdir(parents=True)
    (out / "a" / "answer.json").write_text(json.dumps({"provenance": record}))
    assert len(writer(0).predict_dataset) == 4  # a's four chips skipped
    assert len(writer(0, overwrite=True).predict_dataset) == 8
    with pytest.raises(FileExistsError, match=r"overlap: 0 then, 8 now.*--overwrite"):
        writer(8)
    (out / "a" / "answer.json").write_text(json.dumps({"path": "a.tif"}))  # an older zoo's
    with pytest.raises(FileExistsError, match="no provenance recorded"):
        writer(0)


def test_an_interrupted_embed_continues_where_it_stopped(tmp_path: Path, monkeypatch, caplog):
    from zoo import embed
    from zoo.models.flavars import FLAVARS

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    root = tmp_path / "images"
    for name in ("a.tif", "b.tif"):
        write_utm_geotiff(root / name, height=64, width=100)
    Image.fromarray(np.full((40, 30, 3), 90, dtype=np.uint8)).save(root / "c.png")
    output = tmp_path / "embeddings.parquet"
    argv = ["--config", str(ROOT / "configs/flavars.yaml"), "--config"]
    argv += [str(ROOT / "configs/data/images.yaml"), f"--data.init_args.root={root}"]
    argv += ["--output", str(output), "--no_progress"]
    write_part = embed._write_part

    def interrupted(parts, path, rows, record):  # killed while b.tif's part is written
        if path == "b.tif":
            raise KeyboardInterrupt
        write_part(parts, path, rows, record)

    monkeypatch.setattr(embed, "_write_part", interrupted)
    with pytest.raises(KeyboardInterrupt):
        embed.main(argv)
    parts = embed.parts_folder(output)
    assert sorted(p.name for p in parts.iterdir()) == ["a.tif.parquet"] and not output.exists()

    monkeypatch.setattr(embed, "_write_part", write_part)
    embedded = []
    encode = FLAVARS.encode_image
    monkeypatch.setattr(
        FLAVARS, "encode_image", lambda self, x: embedded.append(len(x)) or encode(self, x)
    )
    caplog.set_level(logging.INFO)
    embed.main(argv)
    assert sum(embedded) == 2 + 1  # b.tif's two chips and c.png's one
    assert "1 of 3 files finished by an interrupted run are skipped" in caplog.text
    frame = gpd.read_parquet(output)
    assert list(frame["path"]) == ["a.tif", "a.tif", "b.tif", "b.tif", "c.png"]
    assert frame.geometry.iloc[-1] is None and frame.geometry.iloc[:4].notna().all()
    assert not parts.exists()  # joined into the output, then removed
    assert read_geoparquet_provenance(output)["model"] == "zoo.models.flavars.FLAVARS"


@pytest.mark.parametrize(
    ("count", "bands", "statistics"),
    [
        (13, [4, 3, 2], []),
        (
            4,
            [1, 2, 3, 4],
            [
                "--data.init_args.mean=[0.5, 0.5, 0.5, 0.5]",
                "--data.init_args.std=[0.2, 0.2, 0.2, 0.2]",
                "--data.init_args.percentiles=null",  # raw reflectance, recorded as such
            ],
        ),
    ],
    ids=["sentinel2-rgb", "naip-4-band"],
)
def test_geopix_predicts_on_chosen_bands_of_a_multiband_scene(
    tmp_path: Path, monkeypatch, answering, count, bands, statistics
):
    """A 13-band scene read as Sentinel-2 RGB, a 4-band one by a 4-channel GeoPix (the data's
    band count linked to the model, its statistics given): masks and provenance come out,
    naming the bands."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    root, out = tmp_path / "images", tmp_path / "out"
    write_utm_geotiff(root / "scene.tif", height=64, width=100, bands=count)
    _predict(tmp_path, root, out, f"--data.init_args.bands={bands}", *statistics)
    assert sum(answering) == 2
    with rasterio.open(out / "scene" / "masks.tif") as cog:
        tagged = json.loads(cog.tags()[PROVENANCE_KEY])
        assert cog.read(1).any()
    assert tagged["bands"] == bands
    assert tagged["percentiles"] == (None if statistics else [2.0, 98.0])
    frame = gpd.read_parquet(out / "masks.parquet")
    assert len(frame) >= 1 and frame.crs.to_epsg() == 4326


def test_geopix_predict_without_a_band_choice_names_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    root = tmp_path / "images"
    write_utm_geotiff(root / "s2.tif", height=64, width=64, bands=13)
    with pytest.raises(ValueError, match=r"s2\.tif .*has 13 band\(s\).*\[4, 3, 2\]"):
        _predict(tmp_path, root, tmp_path / "out")


def test_the_folder_writer_blends_overlapping_chips_with_the_cosine_taper(tmp_path: Path):
    """Two chips overlap by 16 columns, one sure (0.9), one not (0.0): a plain mean would give
    0.45 across the overlap (no mask there); the taper trusts each chip near its own centre, so
    the mask runs into the overlap from the sure chip's side and stops before the other's."""
    from zoo.callbacks.geo import FolderMasks

    root = tmp_path / "images"
    write_utm_geotiff(root / "a.tif", height=32, width=48)
    writer = FolderMasks(tmp_path / "out", merged=None, mask_raster=False)

    def chip(index: int, col: int, probability: float) -> dict:
        return {
            "path": "a.tif",
            "question": "the building",
            "answer": "sure",
            "phrases": ["the building"],
            "category": ["building"],
            "masks": torch.zeros(1, 32, 32, dtype=torch.bool),
            "probabilities": torch.full((1, 32, 32), probability),
            "chip": {
                "index": index,
                "count": 2,
                "window": [0, col, 32, 32],
                "height": 32,
                "width": 48,
            },
        }

    assert writer.add(chip(0, 0, 0.9), root) is None
    folder = writer.add(chip(1, 16, 0.0), root)
    mask = np.array(Image.open(folder / "mask_0.png")) > 0
    assert mask[:, :16].all() and not mask[:, 32:].any()
    assert mask[:, 16:20].all() and not mask[:, 28:32].any()  # the taper decides the overlap
