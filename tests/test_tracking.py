"""W&B tracking: a short offline fit leaves a run folder with the config and the metrics."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import wandb

from zoo.main import main

ROOT = Path(__file__).parents[1]


def test_offline_wandb_run_has_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    runs = tmp_path / "runs"
    main(
        [
            "fit",
            "--config",
            "configs/flavars.yaml",
            f"--data.init_args.root={tmp_path / 'data'}",
            "--data.init_args.splits.train=64",
            "--data.init_args.splits.val=32",
            "--data.init_args.splits.test=8",
            "--data.init_args.batch_size=16",
            "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={runs}",
            f"--trainer.logger.init_args.save_dir={runs}",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
        ]
    )
    wandb.finish()
    # The run's record is written by the W&B service process, which may still hold the last
    # buffered chunk when `finish` returns (seen under CPU load): shutting the service down
    # closes the file; the poll bounds what remains.
    wandb.teardown()
    (run,) = (runs / "wandb").glob("offline-run-*")
    files = run / "files"
    config = (files / "config.yaml").read_text()
    assert "class_path: zoo.models.FLAVARS" in config
    # The run's record (what `wandb sync` uploads) is a binary log of protobuf records; the
    # metric names appear in it verbatim once logged.
    (record,) = run.glob("run-*.wandb")
    data = _record_once_flushed(record, b"trainer/global_step")
    for key in (
        "train_loss",
        "val_zero_shot_acc",
        "val_image_to_text_R@1",
        "val_knn_acc",
        "val_image_to_location_R@1",
        "trainer/global_step",
    ):
        assert key.encode() in data, key
    assert list((files / "media" / "images").glob("val_retrievals*"))  # sample retrievals


def _record_once_flushed(record: Path, marker: bytes, timeout_s: float = 60.0) -> bytes:
    """The record's bytes once `marker` is in them, or as they are after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    data = record.read_bytes()
    while marker not in data and time.monotonic() < deadline:
        time.sleep(0.5)
        data = record.read_bytes()
    return data


@pytest.mark.parametrize(
    ("config", "media"),
    [
        ("configs/aquila.yaml", ["table/val_answers"]),
        ("configs/fuse.yaml", ["table/val_answers"]),
        ("configs/geopix.yaml", ["table/val_answers", "images/val_masks"]),
    ],
    ids=["aquila", "fuse", "geopix"],
)
def test_offline_wandb_run_has_the_generators_sample_media(config, media, tmp_path, monkeypatch):
    """Each generator logs its answers as a table (GeoPix also its mask overlays) with the
    resolved config, in the offline run a user would `wandb sync`."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    runs = tmp_path / "runs"
    main(
        [
            "fit",
            "--config",
            config,
            f"--data.init_args.root={tmp_path / 'data'}",
            "--data.init_args.splits.train=8",
            "--data.init_args.splits.val=4",
            "--data.init_args.splits.test=4",
            "--data.init_args.batch_size=4",
            "--trainer.max_epochs=1",
            "--trainer.check_val_every_n_epoch=1",  # the defaults validate every other epoch
            "--trainer.limit_train_batches=1",
            "--model.init_args.generation.max_new_tokens=3",
            # No captioning metrics (their scorers are slow): the samples callback generates itself.
            "--model.init_args.val_generate_batches=0",
            f"--trainer.default_root_dir={runs}",
            f"--trainer.logger.init_args.save_dir={runs}",
            "--trainer.enable_progress_bar=false",
            "--trainer.log_every_n_steps=1",
        ]
    )
    wandb.finish()
    wandb.teardown()
    (run,) = (runs / "wandb").glob("offline-run-*")
    files = run / "files"
    family = {"aquila": "Aquila", "fuse": "FUSE", "geopix": "GeoPix"}[Path(config).stem]
    assert f"class_path: zoo.models.{family}" in (files / "config.yaml").read_text()
    for kind in media:
        folder, name = kind.split("/")
        found = list((files / "media" / folder).glob(f"{name}*"))
        assert found, f"{kind} missing from {sorted(p.name for p in (files / 'media').rglob('*'))}"
    table = next((files / "media" / "table").glob("val_answers*.table.json"))
    data = json.loads(table.read_text())
    assert (
        data["columns"] == ["image", "question", "answer", "reference"] and len(data["data"]) == 4
    )
