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
        "skyscript", "eurosat", "resisc45", "ucmerced", "patternnet", "spacenet1", "rsicd",
        "ucm_captions", "sydney_captions", "rsvqa_lr", "rsvqa_hr", "geochat", "fit_rs",
        "vrsbench", "rrsisd", "refsegrs", "coco_refs",
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
