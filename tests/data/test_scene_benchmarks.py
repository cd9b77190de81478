"""Scene benchmarks in SkyScript's layout (AID, fMoW, Million-AID, RSI-CB256, SkyScript_cls and the
fine-grained roof shape, road smoothness, road surface) on fake files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from jsonargparse import ArgumentParser
from lightning.pytorch import LightningDataModule

from tests.data.fakes import write_scene_table
from zoo.data.scene_benchmarks import (
    AIDBenchmarkDataModule,
    FMoWBenchmarkDataModule,
    MillionAIDBenchmarkDataModule,
    RoadSmoothnessBenchmarkDataModule,
    RoadSurfaceBenchmarkDataModule,
    RoofShapeBenchmarkDataModule,
    RSICB256BenchmarkDataModule,
    SkyScriptClsBenchmarkDataModule,
)
from zoo.evaluation.config import load_evaluations

DATA = Path(__file__).parent / "scene_benchmarks"
ROOT = Path(__file__).parents[2]
CASES = {
    "aid": AIDBenchmarkDataModule,
    "fmow": FMoWBenchmarkDataModule,
    "millionaid": MillionAIDBenchmarkDataModule,
    "rsicb256": RSICB256BenchmarkDataModule,
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
        [
            ROOT / "configs" / "eval" / f"{name}_knn.yaml",
            ROOT / "configs" / "eval" / f"{name}_zero_shot.yaml",
        ]
    )
    assert knn.cls.protocol == "knn" and zero_shot.cls.protocol == "zero_shot"
    assert type(knn.build(image_size=32).data) is CASES[name]


# ---------------------------------------------------------------- the rest of SkyScript's suite
# SkyScript_cls and the three fine-grained tasks (SkyScript's benchmark_dataset_info.py and its
# scene / fine-grained notebook), their fakes written here in the real layout: SkyScript_cls
# lists its JPEGs relative to the benchmark root (as SkyScript's loader joins them); the
# fine-grained tables carry label_v1 (class names) and label_v2 (0-based indices, the other
# form SkyScript's loader reads; the third class has no v2 label, so those rows are left out).
FINE = {
    "roof_shape": ["flat", "gabled", "hipped"],
    "smoothness": ["excellent", "good", "bad"],
    "surface": ["asphalt", "concrete", "gravel"],
}
SUITE = {
    "skyscript_cls": SkyScriptClsBenchmarkDataModule,
    "roof_shape": RoofShapeBenchmarkDataModule,
    "smoothness": RoadSmoothnessBenchmarkDataModule,
    "surface": RoadSurfaceBenchmarkDataModule,
}


def _write_suite(name: str, benchmark_root: Path) -> Path:
    if name == "skyscript_cls":
        return write_scene_table(
            benchmark_root,
            "SkyScript_cls",
            "img_txt_pairs_val.csv",
            ["airport", "solar power plant", "wind turbine"],
            extension="jpg",
            from_benchmark_root=True,
        )
    classes = FINE[name]
    return write_scene_table(
        benchmark_root,
        name,
        "img_txt_pairs_test.csv",
        classes,
        labels=lambda c, label: {"label_v1": label, "label_v2": str(c) if c < 2 else ""},
        classnames={"classnames_v1.txt": classes, "classnames_v2.txt": classes[:2]},
    )


@pytest.mark.parametrize("name", SUITE)
@pytest.mark.parametrize("labels", ["v1", "v2"])
def test_suite_benchmark_batches_and_labels(name, labels, tmp_path):
    if name == "skyscript_cls" and labels == "v2":
        pytest.skip("SkyScript_cls has one label set")
    root = _write_suite(name, tmp_path)
    kwargs = {} if name == "skyscript_cls" else {"labels": labels}
    dm = SUITE[name](root=str(root), batch_size=4, image_size=16, **kwargs)
    dm.setup("test")
    classes = 2 if labels == "v2" else 3
    assert len(dm.class_names) == classes
    train, test = dm.train_dataset, dm.test_dataset
    assert sorted(train.labels + test.labels) == sorted(list(range(classes)) * 4)
    assert sorted(test.labels) == sorted(list(range(classes)) * 2)  # stratified halves
    assert not set(train.paths) & set(test.paths)
    batch = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert batch["image"].shape == (4, 3, 16, 16)
    c = batch["label"][0].item()
    want = (torch.tensor([60.0 * c, 120.0, 255 - 60.0 * c]).view(1, 3, 1, 1) / 255 - MEAN) / STD
    # JPEG (SkyScript_cls) is lossy even at quality 100; PNG is exact.
    atol = 0.05 if name == "skyscript_cls" else 1e-4
    torch.testing.assert_close(batch["image"][:1], want.expand(1, 3, 16, 16), atol=atol, rtol=0)


@pytest.mark.parametrize("name", SUITE)
def test_suite_bad_input_names_the_path(name, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=f"{tmp_path / 'nowhere'}.* does not exist. Get the dataset"
    ):
        SUITE[name](root=str(tmp_path / "nowhere")).setup("test")
    root = _write_suite(name, tmp_path)
    table = next(root.glob("*.csv"))
    column = "label" if name == "skyscript_cls" else "label_v1"
    text = table.read_text()
    # wrong layout: the label column renamed
    table.write_text(text.replace(column, "class", 1))
    with pytest.raises(ValueError, match=f"{table}.* has no '{column}' column"):
        SUITE[name](root=str(root)).setup("test")
    # wrong layout: the images not where the table says (neither under the folder nor the root)
    table.write_text(text.replace("images/", "pictures/"))
    with pytest.raises(
        FileNotFoundError, match=f"{table}.* lists .*pictures.* neither under {root}"
    ):
        SUITE[name](root=str(root)).setup("test")
    # the class list missing
    table.write_text(text)
    (classnames := next(root.glob("classnames*.txt"))).unlink()
    with pytest.raises(FileNotFoundError, match=f"{classnames}.* does not exist"):
        SUITE[name](
            root=str(root), **({} if name == "skyscript_cls" else {"labels": classnames.stem[-2:]})
        ).setup("test")


def test_fine_grained_label_index_out_of_range_and_bad_label_set(tmp_path):
    root = _write_suite("roof_shape", tmp_path)
    table = root / "img_txt_pairs_test.csv"
    table.write_text(table.read_text().replace(",1\n", ",7\n"))
    with pytest.raises(ValueError, match="label index 7 is out of range for the 2 classes"):
        RoofShapeBenchmarkDataModule(root=str(root), labels="v2").setup("test")
    with pytest.raises(ValueError, match="labels must be 'v1' or 'v2'"):
        RoofShapeBenchmarkDataModule(root=str(root), labels="v3")


@pytest.mark.parametrize("name", SUITE)
def test_suite_configs_parse_and_load_the_fake_data(name, tmp_path):
    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_path(str(ROOT / "configs" / "data" / f"{name}.yaml"))
    folder = "SkyScript_cls" if name == "skyscript_cls" else name
    assert config.data.init_args.root == f"data/{folder}"
    config.data.init_args.root = str(_write_suite(name, tmp_path))
    dm = parser.instantiate(config).data
    assert type(dm) is SUITE[name] and dm.image_size == 224
    dm.setup("test")
    assert len(dm.test_dataset) == 6
    knn, zero_shot = load_evaluations(
        [
            ROOT / "configs" / "eval" / f"{name}_knn.yaml",
            ROOT / "configs" / "eval" / f"{name}_zero_shot.yaml",
        ]
    )
    assert knn.cls.protocol == "knn" and zero_shot.cls.protocol == "zero_shot"
    assert type(knn.build(image_size=32).data) is SUITE[name]
    # SkyScript's prompts for the task (prompt_templates.py)
    subject = {"roof_shape": "building, ", "smoothness": "road, ", "surface": "road, "}.get(
        name, ""
    )
    assert zero_shot.build().templates[0] == f"a satellite photo of {subject}{{}}."
