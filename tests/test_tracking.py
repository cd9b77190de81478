"""W&B tracking: a short offline fit leaves a run folder with the config and the metrics."""

from __future__ import annotations

import sys
from pathlib import Path

import wandb

from zoo.main import main

ROOT = Path(__file__).parents[1]


def test_offline_wandb_run_has_config_and_metrics(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    runs = tmp_path / "runs"
    main([
        "fit", "--config", "configs/flavars.yaml",
        f"--data.init_args.root={tmp_path / 'data'}",
        "--data.init_args.splits.train=64", "--data.init_args.splits.val=32",
        "--data.init_args.splits.test=8",
        "--data.init_args.batch_size=16", "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}",
        "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1",
    ])
    wandb.finish()
    (run,) = (runs / "wandb").glob("offline-run-*")
    files = run / "files"
    config = (files / "config.yaml").read_text()
    assert "class_path: zoo.models.FLAVARS" in config
    # The run's record (what `wandb sync` uploads) is a binary log of protobuf records; the
    # metric names appear in it verbatim once logged.
    (record,) = run.glob("run-*.wandb")
    data = record.read_bytes()
    for key in ("train_loss", "val_zero_shot_acc", "val_image_to_text_R@1", "val_knn_acc",
                "val_image_to_location_R@1", "trainer/global_step"):
        assert key.encode() in data, key
    assert list((files / "media" / "images").glob("val_retrievals*"))  # sample retrievals
