"""Every ``configs/data/*.yaml`` parses and instantiates its datamodule (none goes stale)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser
from lightning import LightningDataModule

import zoo.main  # noqa: F401  (registers the datamodules' short names)

ROOT = Path(__file__).resolve().parents[1]
DATA_CONFIGS = sorted((ROOT / "configs" / "data").glob("*.yaml"))


def test_there_is_a_data_config_per_benchmark() -> None:
    names = {p.stem for p in DATA_CONFIGS}
    expected = {
        "skyscript",
        "eurosat",
        "resisc45",
        "ucmerced",
        "patternnet",
        "spacenet1",
        "rsicd",
        "ucm_captions",
        "sydney_captions",
        "rsvqa_lr",
        "rsvqa_hr",
        "geochat",
        "fit_rs",
        "vrsbench",
        "rrsisd",
        "refsegrs",
        "coco_refs",
    }
    assert expected <= names, sorted(expected - names)


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: p.name)
def test_data_config_parses_and_instantiates(path: Path) -> None:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(spec) == {"data"}, f"{path.name}: a data config holds only a 'data' block"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    config = parser.parse_object(spec)
    dm = parser.instantiate_classes(config).data
    assert isinstance(dm, LightningDataModule)
    root = getattr(dm, "root", None) or getattr(dm, "kwargs", {}).get("root")
    assert root is not None and str(root).startswith("data/"), "default roots live under data/"


FAKE = ROOT / "tests" / "data"


@pytest.mark.parametrize(
    ("model", "data", "overrides"),
    [
        (
            "flavars",
            "skyscript",
            ["--data.init_args.coordinates_file=" + str(FAKE / "skyscript" / "coordinates.csv")],
        ),
        ("flavars", "rsicd", []),
        (
            "aquila",
            "rsvqa_lr",
            ["--model.init_args.question_types=[count,presence,comp,rural_urban]"],
        ),
        ("aquila", "vrsbench", []),
        (
            "fuse",
            "ucm_captions",
            ["--data.class_path=zoo.data.captions.CaptionConversationDataModule"],
        ),
        ("geopix", "rrsisd", []),
        ("geopix", "refsegrs", []),
    ],
)
def test_model_config_composes_with_data_config_on_fake_data(
    model: str, data: str, overrides: list[str], tmp_path: Path
) -> None:
    """`--config configs/<model>.yaml --config configs/data/<name>.yaml` trains a step: a user
    swaps the dataset by adding one file."""
    import sys

    from zoo.main import main

    argv0, sys.argv = sys.argv, ["zoo"]
    try:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs" / f"{model}.yaml"),
                "--config",
                str(ROOT / "configs" / "data" / f"{data}.yaml"),
                *overrides,
                f"--data.init_args.root={FAKE / data}",
                "--data.init_args.image_size=64",
                "--data.init_args.batch_size=2",
                "--data.init_args.num_workers=0",
                "--trainer.fast_dev_run=1",
                "--trainer.logger=false",
                "--trainer.callbacks=[]",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    finally:
        sys.argv = argv0
