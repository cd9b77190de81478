"""``--ckpt_path last`` (and an explicit path) means the same in every command: after one tiny
FLAVARS fit, fit (resume), validate, test, predict, evaluate, embed, export and demo each use
the checkpoint's weights, not the config's initial ones (issue 21)."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from tests.faults import stub_demo_page
from zoo.main import build_from_configs, main

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "flavars.yaml")
COMMANDS = ["fit", "validate", "test", "predict", "evaluate", "embed", "export", "demo"]


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.chdir(tmp_path)  # the config's writers write under runs/ here


def _override(folder: Path, runs: Path, data: Path, **trainer) -> Path:
    """The run's settings as a YAML every command reads (evaluate and export take configs
    only): tiny data, one short epoch, the run folder under ``runs``."""
    path = folder / "override.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 1,
                    "limit_train_batches": 2,
                    "limit_val_batches": 1,
                    "enable_progress_bar": False,
                    "default_root_dir": str(runs),
                    "logger": {"init_args": {"save_dir": str(runs)}},
                    **trainer,
                },
                "data": {
                    "init_args": {
                        "root": str(data),
                        "batch_size": 8,
                        "splits": {"train": 16, "val": 8, "test": 8},
                    }
                },
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny FLAVARS fit (W&B offline, the config's run name); the fresh model's weights, the
    last checkpoint's and a perturbed copy of it outside the run (the explicit path)."""
    import wandb

    folder = tmp_path_factory.mktemp("ckpt_last")
    override = _override(folder, folder / "runs", folder / "data")
    main(["fit", "--config", CONFIG, "--config", str(override)])
    wandb.finish()
    last = folder / "runs" / "flavars-embedded" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    fresh = build_from_configs([CONFIG, override]).model.state_dict()
    explicit = folder / "elsewhere" / "perturbed.ckpt"
    explicit.parent.mkdir()
    perturbed = {
        k: v + 0.5 if v.is_floating_point() else v for k, v in checkpoint["state_dict"].items()
    }
    torch.save(checkpoint | {"state_dict": perturbed}, explicit)
    return types.SimpleNamespace(
        folder=folder,
        override=override,
        last=last,
        fresh=fresh,
        weights={"last": checkpoint["state_dict"], "explicit": perturbed},
        paths={"last": "last", "explicit": str(explicit)},
        global_step=checkpoint["global_step"],
    )


def _assert_loaded(seen: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], fresh) -> None:
    """``seen`` holds every tensor of ``expected``, which differs from the initial weights."""
    assert set(expected) <= set(seen)
    for key, value in expected.items():
        assert torch.equal(seen[key].cpu(), value), f"{key} is not the checkpoint's"
    changed = [k for k in expected if k in fresh and not torch.equal(fresh[k], expected[k])]
    assert len(changed) > len(expected) // 2, (
        "the checkpoint should differ from the initial weights"
    )


def _with(override: Path | str, ckpt_path: str, *extra: str) -> list[str]:
    """The arguments every command takes here: the config, the run's override, ``--ckpt_path``."""
    return ["--config", CONFIG, "--config", str(override), "--ckpt_path", ckpt_path, *extra]


def _probe(cli):
    (probe,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "WeightsProbe"]
    return probe


def test_the_fit_trained_the_weights(run):
    """The premise of every test here: the last checkpoint is not the initial model."""
    _assert_loaded(run.weights["last"], run.weights["last"], run.fresh)
    assert run.global_step == 2


@pytest.mark.parametrize("which", ["last", "explicit"])
@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_trainer_commands_use_the_checkpoint(run, command, which):
    # W&B stays: it names the run.
    probe = "--trainer.callbacks+=tests.faults.WeightsProbe"
    cli = main([command, *_with(run.override, run.paths[which], probe)])
    _assert_loaded(_probe(cli).seen[command], run.weights[which], run.fresh)
    expected = run.last if which == "last" else Path(run.paths[which])
    assert Path(cli.trainer.ckpt_path).resolve() == expected.resolve()


@pytest.mark.parametrize("which", ["last", "explicit"])
def test_evaluate_uses_the_checkpoint(run, which, tmp_path, monkeypatch):
    """``zoo evaluate`` hands the checkpoint's model to the protocols and names the file."""
    import zoo.evaluation.cli as evaluate_cli

    seen = {}

    def capture(model, *args, **kwargs):
        seen.update(model.state_dict())
        return []

    monkeypatch.setattr(evaluate_cli, "evaluate", capture)
    evals = ["--evals", str(ROOT / "configs/eval/eurosat_knn.yaml")]
    main(
        [
            "evaluate",
            *_with(run.override, run.paths[which], *evals),
            "--output",
            str(tmp_path / "results"),
        ]
    )
    _assert_loaded(seen, run.weights[which], run.fresh)


@pytest.mark.parametrize("which", ["last", "explicit"])
def test_embed_uses_the_checkpoint(run, which, tmp_path):
    """``zoo embed``'s embeddings are those of the checkpoint's model, computed here."""
    import geopandas as gpd
    import numpy as np

    from zoo.embed import embed_folder

    images = _images(tmp_path / "images")
    output = tmp_path / "embeddings.parquet"
    data = ["--config", str(ROOT / "configs/data/images.yaml"), f"--data.init_args.root={images}"]
    main(
        [
            "embed",
            *_with(run.override, run.paths[which], *data),
            "--output",
            str(output),
            "--no_progress",
        ]
    )
    written = np.stack(gpd.read_parquet(output)["image_embedding"].to_numpy())
    cli = build_from_configs([CONFIG, run.override, data[1]], None, data[2:])
    cli.model.load_state_dict(run.weights[which])
    expected = np.stack(embed_folder(cli.model, cli.datamodule, progress=False)["image_embedding"])
    assert np.allclose(written, expected, atol=1e-6)
    cli.model.load_state_dict(run.fresh)
    initial = np.stack(embed_folder(cli.model, cli.datamodule, progress=False)["image_embedding"])
    assert not np.allclose(written, initial, atol=1e-3)


@pytest.mark.parametrize("which", ["last", "explicit"])
def test_export_writes_the_checkpoints_weights(run, which, tmp_path):
    from safetensors.torch import load_file

    main(["export", *_with(run.override, run.paths[which]), "--output", str(tmp_path / "export")])
    (weights,) = (tmp_path / "export").glob("*.safetensors")
    _assert_loaded(load_file(weights), run.weights[which], run.fresh)


@pytest.mark.parametrize("which", ["last", "explicit"])
def test_demo_serves_the_checkpoints_model(run, which, monkeypatch):
    """``zoo demo`` (the page built, not served; Gradio itself is replaced when absent)."""
    import zoo.demo

    served = stub_demo_page(monkeypatch)
    zoo.demo.main(_with(run.override, run.paths[which]), block=False)
    _assert_loaded(served["weights"], run.weights[which], run.fresh)
    assert served["launch"]["prevent_thread_lock"] is True


@pytest.mark.parametrize("which", ["last", "explicit"])
def test_fit_resumes_from_the_checkpoint(run, which, tmp_path):
    """A copy of the run resumed for a second epoch: training starts from the checkpoint's
    weights and step, in the same run folder. Last in this file: the explicit checkpoint's run
    record names the fixture's run, which its resume continues."""
    import wandb

    runs = tmp_path / "runs"
    shutil.copytree(run.folder / "runs", runs, symlinks=True)
    override = _override(tmp_path, runs, run.folder / "data", max_epochs=2)
    probe = "--trainer.callbacks+=tests.faults.WeightsProbe"
    cli = main(["fit", *_with(override, run.paths[which], probe)])
    wandb.finish()
    _assert_loaded(_probe(cli).seen["fit"], run.weights[which], run.fresh)
    assert cli.trainer.global_step == 2 * run.global_step
    if which == "last":  # the same run folder continues
        assert (runs / "flavars-embedded" / "version_0" / "checkpoints" / "last.ckpt").is_file()
        assert not (runs / "flavars-embedded" / "version_1").exists()


def _images(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for name, colour in (("lake", (20, 60, 160)), ("forest", (30, 120, 40))):
        Image.fromarray(np.full((48, 48, 3), colour, dtype=np.uint8)).save(folder / f"{name}.png")
    return folder
