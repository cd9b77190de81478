"""Scene benchmarks in SkyScript's layout (AID, fMoW, Million-AID, RSI-CB256) on fake files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from zoo.data.scene_benchmarks import (
    AIDBenchmarkDataModule,
    FMoWBenchmarkDataModule,
    MillionAIDBenchmarkDataModule,
    RSICB256BenchmarkDataModule,
)
from zoo.evaluation.config import load_evaluations

DATA = Path(__file__).parent / "scene_benchmarks"
ROOT = Path(__file__).parents[2]
CASES = {
    "aid": AIDBenchmarkDataModule, "fmow": FMoWBenchmarkDataModule,
    "millionaid": MillionAIDBenchmarkDataModule, "rsicb256": RSICB256BenchmarkDataModule,
}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _dm(name: str, root: Path | None = None, **kwargs):
    return CASES[name](root=str(root or DATA / name), batch_size=4, image_size=16, **kwargs)


@pytest.mark.parametrize("name", CASES)
def test_batch_contract_and_stratified_split(name):
    dm = _dm(name)
    dm.setup("test")
    assert len(dm.class_names) == 3
    train, test = dm.datasets["train"], dm.datasets["test"]
    assert sorted(train.labels) == [0, 0, 1, 1, 2, 2] and sorted(test.labels) == [0, 0, 1, 1, 2, 2]
    assert not set(train.paths) & set(test.paths)
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert batch["image"].shape == (4, 3, 16, 16) and batch["label"].dtype == torch.long
    # Uniform fake images: class c is (60c, 120, 255 - 60c), normalized with ImageNet's stats.
    c = batch["label"][0].item()
    want = (torch.tensor([60.0 * c, 120.0, 255 - 60.0 * c]).view(1, 3, 1, 1) / 255 - MEAN) / STD
    torch.testing.assert_close(batch["image"][:1], want.expand(1, 3, 16, 16), atol=1e-4, rtol=0)
    again = _dm(name)
    again.setup("test")
    assert again.datasets["test"].paths == test.paths  # seeded


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_named(name, tmp_path):
    root = tmp_path / name
    shutil.copytree(DATA / name, root)
    table = next(root.glob("*.csv"))
    with pytest.raises(FileNotFoundError, match="does not exist. Get the dataset"):
        _dm(name, tmp_path / "missing").setup("test")
    (root / table.name).write_text(table.read_text() + "images/x.png,a volcano,volcano\n")
    with pytest.raises(ValueError, match="not in .*classnames.txt"):
        _dm(name, root).setup("test")
    (root / table.name).write_text(table.read_text().replace("label", "class", 1))
    with pytest.raises(ValueError, match="has no 'label' column"):
        _dm(name, root).setup("test")
    shutil.copy(DATA / name / table.name, root / table.name)
    first = sorted((root / "images").rglob("*.png"))[0]
    first.write_bytes(b"not a png")
    dm = _dm(name, root, test_fraction=0.99)
    dm.setup("test")
    with pytest.raises(RuntimeError, match=f"could not read .*{first.name}"):
        [dm.datasets[s][i] for s in ("train", "test") for i in range(len(dm.datasets[s]))]


@pytest.mark.parametrize("name", CASES)
def test_configs_parse_and_load_the_fake_data(name):
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_path(str(ROOT / "configs" / "data" / f"{name}.yaml"))
    assert config.data.init_args.root == f"data/{name}"
    config.data.init_args.root = str(DATA / name)
    dm = parser.instantiate(config).data
    assert type(dm) is CASES[name] and dm.image_size == 224
    dm.setup("test")
    assert len(dm.datasets["test"]) == 6
    knn, zero_shot = load_evaluations(
        [ROOT / "configs" / "eval" / f"{name}_knn.yaml", ROOT / "configs" / "eval" / f"{name}_zero_shot.yaml"]
    )
    assert knn.cls.protocol == "knn" and zero_shot.cls.protocol == "zero_shot"
    assert type(knn.build(image_size=32).data) is CASES[name]
