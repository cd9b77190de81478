"""Checkpoints written by zoo 0.1.0.dev0 (commit 71b13fc, before the constructors took typed
groups and FLAVARS took one encoder-set interface) still load in every family: ``zoo test``
runs on their weights, ``zoo fit`` resumes from them, and ``build_from_configs`` (evaluate,
export, embed, demo) rebuilds their model.

The checkpoints are kept as layouts (tests/checkpoint_layouts.py): the hyper-parameters, the
loop, callback and optimizer states, and every state-dict key and shape exactly as that
version's ``zoo fit`` wrote them, from ``zoo fit --config configs/<family>.yaml
--trainer.max_steps=2`` on 16 embedded training samples.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.checkpoint_layouts import materialize
from zoo.main import build_from_configs, main

ROOT = Path(__file__).parents[1]
LAYOUTS = ROOT / "tests" / "data" / "checkpoints_0_1"
FAMILIES = ["flavars", "aquila", "fuse", "geopix"]


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.chdir(tmp_path)  # prediction writers write under runs/ here


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("old_checkpoint_data")


def _old(family: str, tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / f"{family}-0.1.ckpt"
    return path, materialize(LAYOUTS / f"{family}.json", path)


def _override(tmp_path: Path, data_root: Path, family: str) -> Path:
    path = tmp_path / "override.yaml"
    settings = {
        "trainer": {
            "logger": False,
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "enable_progress_bar": False,
            "default_root_dir": str(tmp_path / "runs"),
        },
        "data": {
            "init_args": {
                "root": str(data_root / family),
                "batch_size": 4,
                "splits": {"train": 16, "val": 8, "test": 8},
            }
        },
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def _configs(family: str, override: Path) -> list[str]:
    return ["--config", str(ROOT / "configs" / f"{family}.yaml"), "--config", str(override)]


def _assert_weights(
    seen: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], model: object
) -> None:
    """Every old weight is in the model, at its key of this version where the family moved it
    (its ``upgrade_state_dict``, which its load-state-dict pre-hook applies)."""
    upgrade = getattr(type(model), "upgrade_state_dict", None)
    expected = upgrade(expected) if upgrade is not None else expected
    missing = sorted(set(expected) - set(seen))
    assert not missing, f"the model has no {missing[:5]}"
    for key, value in expected.items():
        assert torch.equal(seen[key].cpu(), value.to(seen[key].dtype)), f"{key} not loaded"


@pytest.mark.parametrize("family", FAMILIES)
def test_test_runs_on_an_old_checkpoints_weights(family, tmp_path, data_root):
    path, old = _old(family, tmp_path)
    probe = "--trainer.callbacks+=tests.faults.WeightsProbe"
    override = _override(tmp_path, data_root, family)
    cli = main(["test", *_configs(family, override), "--ckpt_path", str(path), probe])
    (probe,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "WeightsProbe"]
    _assert_weights(probe.seen["test"], old["state_dict"], cli.model)
    assert type(cli.model).__name__.lower() == family


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_resumes_from_an_old_checkpoint(family, tmp_path, data_root):
    path, old = _old(family, tmp_path)
    override = _override(tmp_path, data_root, family)
    steps = old["global_step"] + 1
    cli = main(
        [
            "fit",
            *_configs(family, override),
            "--ckpt_path",
            str(path),
            f"--trainer.max_steps={steps}",
            "--trainer.max_epochs=10",
            "--trainer.limit_val_batches=0",
        ]
    )
    assert cli.trainer.global_step == steps


@pytest.mark.parametrize("family", FAMILIES)
def test_side_commands_rebuild_an_old_checkpoints_model(family, tmp_path, data_root):
    path, old = _old(family, tmp_path)
    override = _override(tmp_path, data_root, family)
    cli = build_from_configs([ROOT / "configs" / f"{family}.yaml", override], path)
    _assert_weights(cli.model.state_dict(), old["state_dict"], cli.model)


@pytest.mark.parametrize("family", FAMILIES)
def test_old_hyperparameters_land_in_this_versions_groups(family, tmp_path):
    """Every hyper-parameter the old checkpoint stored reaches this version's constructor: a
    key it takes, or (renamed) its value at the new dotted place. A key dropped or left flat
    would rebuild the model from the config instead of from the checkpoint."""
    import inspect

    from zoo.checkpoints import upgrade_hyperparameters
    from zoo.encoders.llm import LLMSpec
    from zoo.errors import RENAMED_KEYS

    _, old = _old(family, tmp_path)
    stored = dict(old["hyper_parameters"])
    model_class = __import__("zoo.models", fromlist=["x"]).__dict__[type_name(stored)]
    upgraded = upgrade_hyperparameters(stored)
    model_class_parameters = inspect.signature(model_class.__init__).parameters
    taken = set(model_class_parameters) - {"self"}
    assert set(upgraded) <= taken, f"keys this version does not take: {set(upgraded) - taken}"
    flat = LLMSpec.upgrade({k: v for k, v in stored.items() if not k.startswith("_")})
    for key, value in flat.items():
        new = key if key in taken else RENAMED_KEYS[key]
        if key == "flava":  # zoo 0.1's flava was the folder; now a group (FlavaSpec)
            new = "flava.folder"
        node = upgraded
        for part in new.split("."):
            node = node[part]
        group, *path = new.split(".")
        default = model_class_parameters[group].default
        for part in path:  # the new place is a field of the group the constructor takes
            assert hasattr(default, part), f"{key} -> {new}: {type(default).__name__} has no {part}"
            default = getattr(default, part)
        expected = list(value) if isinstance(value, tuple) else value
        assert node == expected, f"{key} -> {new}: {node!r} != {expected!r}"


def type_name(hparams: dict) -> str:
    """The model class name a checkpoint's ``_class_path`` names."""
    return str(hparams["_class_path"]).rpartition(".")[2]
