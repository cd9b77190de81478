"""Run folders, checkpoint checks, readable errors and writers that keep earlier outputs (issue
"Nothing lost, nothing silent"); the faults through the real CLI are in test_faults.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.loggers import WandbLogger

from zoo.checkpoints import CheckpointError, merge_hyperparameters, read_lightning_checkpoint
from zoo.data.sampling import train_loader
from zoo.errors import did_you_mean
from zoo.io import remove_stale_temporaries
from zoo.main import ZooCLI, main
from zoo.runs import RunFolder, newest_checkpoint, next_version, run_folder_of

ROOT = Path(__file__).parents[1]
RUN_CONFIGS = [
    "configs/flavars.yaml",
    "configs/aquila.yaml",
    "configs/fuse.yaml",
    "configs/geopix.yaml",
    "configs/flavars/skyscript_vitb16.yaml",
    "configs/aquila/stage1.yaml",
    "configs/fuse/stage1.yaml",
    "configs/geopix/stage1.yaml",
]
TINY = [
    "--data.init_args.splits.train=16",
    "--data.init_args.splits.val=8",
    "--data.init_args.splits.test=8",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])


@pytest.mark.parametrize("config", RUN_CONFIGS)
def test_every_config_keeps_a_true_last_checkpoint(config):
    """Row 1 (the configs): a monitor-free ModelCheckpoint keeping its newest file, named
    ``last``, beside the monitored best where there is one. Not ``save_top_k: 0`` with
    ``save_last``: since Lightning 2.6 that writes ``last.ckpt`` only when the fit ends."""
    callbacks = yaml.safe_load((ROOT / config).read_text())["trainer"]["callbacks"]
    checkpoints = [
        c.get("init_args") or {} for c in callbacks if c["class_path"].endswith("ModelCheckpoint")
    ]
    last = [c for c in checkpoints if c.get("filename") == "last"]
    assert len(last) == 1 and not last[0].get("monitor") and not last[0].get("save_last")
    assert last[0]["save_top_k"] == 1 and last[0]["enable_version_counter"] is False
    assert not any(c.get("save_last") for c in checkpoints)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A FLAVARS fit of 2 epochs x 2 steps through the CLI (W&B offline), its printed output."""
    import contextlib
    import io

    import wandb

    runs = tmp_path_factory.mktemp("fit") / "runs"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        cli = main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/flavars.yaml"),
                *TINY,
                f"--data.init_args.root={runs.parent / 'data'}",
                "--data.init_args.batch_size=8",
                "--trainer.max_epochs=2",
                "--trainer.limit_val_batches=1",
                "--trainer.log_every_n_steps=1",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={runs}",
                f"--trainer.logger.init_args.save_dir={runs}",
                "--trainer.callbacks+=tests.faults.LastCheckpointProbe",
            ]
        )
    wandb.finish()
    return cli, out.getvalue(), runs / "flavars-embedded" / "version_0"


def test_true_last_checkpoint_is_written_every_epoch(fitted):
    """Row 'default FLAVARS fit: last.ckpt holds epoch 3': what a kill would leave when the
    second epoch starts is the first epoch's last step, and at the end the final step; every
    checkpoint, the process's first included, names the model and the W&B run."""
    cli, _, run = fitted
    (probe,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "LastCheckpointProbe"]
    assert probe.seen == {0: None, 1: 2}
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 4
    best = list((run / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1
    (wandb_id,) = [lg.version for lg in cli.trainer.loggers if isinstance(lg, WandbLogger)]
    for path in [run / "checkpoints" / "last.ckpt", *best]:
        record = torch.load(path, map_location="cpu", weights_only=True)["callbacks"]["RunRecord"]
        assert record["model_class"] == "zoo.models.flavars.FLAVARS"
        assert record["wandb_id"] is not None and record["wandb_id"] == wandb_id
        assert record["version"] == 0


def test_fit_prints_final_and_best_metrics_and_keeps_them_in_the_run_folder(fitted):
    """Row 'results of a fit': the final and best validation metrics printed as a table, a CSV
    logger beside W&B and the resolved config in the run folder, checkpoints under it."""
    _, printed, run = fitted
    assert "Validation metrics of this fit (final and best):" in printed
    table = printed.split("(final and best):", 1)[1]
    assert "| metric | final | best | best at |" in table
    assert any(line.startswith("| val_zero_shot_acc |") for line in table.splitlines())
    # Beside the untrained model's value (the whole-validation sanity check) and the chance
    # baseline of the 10 scene classes; retrieval among the 8 pairs of the one batch.
    assert "| metric | final | best | best at | untrained | baseline |" in table
    row = next(line for line in table.splitlines() if line.startswith("| val_zero_shot_acc |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[4]) >= 0 and cells[5] == "0.1 (chance)", row
    recall = next(line for line in table.splitlines() if "val_image_to_text_R@1 |" in line)
    assert recall.rstrip().endswith("| 0.125 (chance) |"), recall
    rows = pd.read_csv(run / "metrics.csv")
    assert rows["train_loss"].notna().sum() == 4 and rows["val_zero_shot_acc"].notna().sum() == 2
    assert "class_path: zoo.models.FLAVARS" in (run / "config.yaml").read_text()
    assert (run.parent / "latest").resolve() == run.resolve()
    assert list((run.parent.parent / "wandb").glob("offline-run-*"))  # W&B beside it


def test_run_folders_versions_latest_and_last(tmp_path):
    experiment = tmp_path / "runs" / "flavars" / "flavars-embedded"
    assert next_version(experiment) == 0 and newest_checkpoint(experiment) is None
    first = RunFolder(experiment, 0).create()
    (first.checkpoints / "last.ckpt").write_bytes(b"0")
    second = RunFolder(experiment, next_version(experiment)).create()
    assert second.version == 1 and (experiment / "latest").resolve() == second.path.resolve()
    (second.checkpoints / "best.ckpt").write_bytes(b"1")
    os.utime(first.checkpoints / "last.ckpt", ns=(2**62, 2**62))  # the newest, by mtime
    assert newest_checkpoint(experiment) == first.checkpoints / "last.ckpt"
    assert run_folder_of(first.checkpoints / "last.ckpt") == RunFolder(experiment.resolve(), 0)
    assert run_folder_of(tmp_path / "elsewhere.ckpt") is None


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path):
    """Row 'SIGKILL while writing a checkpoint': the killed writer's temporary file is swept by
    the next run's RunFolder.create(); the previous checkpoint is intact; a live writer's is kept."""
    run = RunFolder(tmp_path / "exp", 0).create()
    target = run.checkpoints / "last.ckpt"
    target.write_bytes(b"previous")
    code = (
        "import os, signal, sys\nfrom zoo.io import atomic_write\n"
        "with atomic_write(sys.argv[1], 'wb') as f:\n"
        "    f.write(b'half'); f.flush(); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(target)], env=env, timeout=120)
    assert done.returncode == -9
    (left,) = [p for p in run.checkpoints.iterdir() if p.name.endswith(".tmp")]
    live = run.checkpoints / f".best.ckpt.pid{os.getpid()}.abc.tmp"
    live.write_bytes(b"being written")
    run.create()
    assert not left.exists() and live.exists() and target.read_bytes() == b"previous"
    assert remove_stale_temporaries(run.checkpoints) == []


def test_resumable_loader_continues_the_same_order_mid_epoch():
    data = list(range(40))
    straight = train_loader(data, 8, 0, None, seed=3)
    straight.sampler.set_epoch(2)
    order = [b.tolist() for b in straight]
    first = iter(straight)
    head = [next(first).tolist() for _ in range(2)]
    state = straight.state_dict()
    assert state == {"epoch": 2, "seed": 3, "batches": 2}
    resumed = train_loader(data, 8, 0, None, seed=0)
    resumed.load_state_dict(state)
    assert len(resumed) == 5 and head + [b.tolist() for b in resumed] == order
    resumed.load_state_dict({**state, "batches": 5})  # an epoch-end state restores nothing
    assert len([b for b in resumed]) == 5


def _lightning_checkpoint(path: Path, model, **hparams) -> Path:
    values = {k: asdict(v) if is_dataclass(v) else v for k, v in dict(model.hparams).items()}
    values |= hparams
    torch.save(
        {
            "state_dict": model.state_dict(),
            "pytorch-lightning_version": "2.6.6",
            "hyper_parameters": values,
            "global_step": 0,
            "epoch": 0,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def flavars_checkpoint(tmp_path_factory):
    cli = main(["--config", "configs/flavars.yaml", *TINY, "--trainer.logger=false"], run=False)
    path = tmp_path_factory.mktemp("ckpt") / "flavars.ckpt"
    return _lightning_checkpoint(path, cli.model, _class_path="zoo.models.FLAVARS", embed_dim=64)


def _parsed(monkeypatch, args):
    """The CLI built for ``args`` with the subcommand's run skipped."""
    monkeypatch.setattr(ZooCLI, "_run_subcommand", lambda self, subcommand: None)
    return main(args)


def test_checkpoint_of_another_family_is_an_error_naming_both(
    flavars_checkpoint, monkeypatch, tmp_path
):
    """Rows 'Aquila config + a FLAVARS checkpoint, predict' and 'FLAVARS config + an Aquila
    --ckpt_path' (fit: never adopted, no KeyError)."""
    with pytest.raises(CheckpointError, match=r"holds a FLAVARS model .* the config builds Aquila"):
        _parsed(
            monkeypatch,
            [
                "predict",
                "--config",
                "configs/aquila.yaml",
                *TINY,
                "--ckpt_path",
                str(flavars_checkpoint),
            ],
        )
    aquila = tmp_path / "aquila.ckpt"  # what the check reads of an Aquila checkpoint
    torch.save(
        {
            "state_dict": {},
            "pytorch-lightning_version": "2.6.6",
            "global_step": 3,
            "hyper_parameters": {"_class_path": "zoo.models.Aquila", "llm": "tiny"},
        },
        aquila,
    )
    with pytest.raises(
        CheckpointError,
        match=r"holds a Aquila model \(zoo.models.Aquila\), but the "
        r"config builds FLAVARS \(zoo.models.FLAVARS\)",
    ):
        _parsed(
            monkeypatch,
            [
                "fit",
                "--config",
                "configs/flavars.yaml",
                *TINY,
                "--trainer.logger=false",
                f"--trainer.default_root_dir={tmp_path}",
                "--ckpt_path",
                str(aquila),
            ],
        )
    assert not (tmp_path / "flavars").exists()  # no run folder was started


def test_command_line_overrides_win_over_checkpoint_hparams(
    flavars_checkpoint, monkeypatch, caplog
):
    """Row '--ckpt_path plus --model.init_args.lr=0.5': the override wins, with a warning; the
    checkpoint's own values (embed_dim 64) rebuild the model, also said."""
    caplog.set_level(logging.WARNING, "zoo")
    cli = _parsed(
        monkeypatch,
        [
            "validate",
            "--config",
            "configs/flavars.yaml",
            *TINY,
            "--trainer.logger=false",
            "--ckpt_path",
            str(flavars_checkpoint),
            "--model.init_args.optimizer.lr=0.5",
        ],
    )
    assert cli.model.optimizer_config.lr == 0.5
    assert cli.model.encoders.image_projection.out_features == 64
    text = caplog.text
    assert (
        "model.init_args.optimizer.lr: 0.5 from the command line replaces the checkpoint's 0.001"
        in text
    )
    assert "model.init_args.embed_dim: the checkpoint's 64 replaces the config's 128" in text


def test_merge_keeps_command_line_keys_and_reports_each_difference():
    apply, messages = merge_hyperparameters(
        {
            "_class_path": "x",
            "lr": 1.0,
            "optimizer": {"lr": 1e-3, "betas": (0.9, 0.98)},
            "depth": 2,
        },
        {"lr": 1.0, "optimizer": {"lr": 0.5, "betas": [0.9, 0.98]}, "depth": 3},
        {"optimizer.lr"},
    )
    assert apply["optimizer"] == {"lr": 0.5, "betas": [0.9, 0.98]}  # the command line's lr kept
    assert apply["depth"] == 2 and "_class_path" not in apply
    assert len(messages) == 2


def test_truncated_and_foreign_checkpoints_are_named(tmp_path, flavars_checkpoint):
    """Row 'truncated or non-checkpoint --ckpt_path'."""
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(flavars_checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        read_lightning_checkpoint(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"is not a Lightning checkpoint .*\['weight'\]"):
        read_lightning_checkpoint(foreign)


def test_last_without_any_checkpoint_is_an_error(tmp_path, monkeypatch):
    """Row 'resume with --ckpt_path last' when nothing was saved: no silent fresh start."""
    with pytest.raises(CheckpointError, match="--ckpt_path last: no checkpoint in"):
        _parsed(
            monkeypatch,
            [
                "fit",
                "--config",
                "configs/flavars.yaml",
                *TINY,
                f"--trainer.default_root_dir={tmp_path}",
                "--ckpt_path",
                "last",
            ],
        )


def _command_line(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["zoo", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


def test_zoo_errors_print_the_message_alone(monkeypatch, capsys, tmp_path):
    """Row 'a data error: the last line of a ~45-line traceback'; --traceback shows it all."""
    args = [
        "fit",
        "--config",
        "configs/flavars.yaml",
        "--model.init_args.vision.name=vit_nope",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=false",
        *TINY,
    ]
    code, err = _command_line(monkeypatch, capsys, *args)
    assert code == 1 and err.startswith("zoo: error: unknown vision encoder 'vit_nope'")
    assert "Traceback" not in err and len(err.splitlines()) <= 4
    monkeypatch.setattr(sys, "argv", ["zoo", *args, "--traceback"])
    with pytest.raises(ValueError, match="unknown vision encoder"):
        main()


def test_data_error_prints_the_message_alone(monkeypatch, capsys, tmp_path):
    """Row 'a data error: the message is clear, but it is the last line of a ~45-line
    traceback': a latitude of 200 in a SkyScript-format table, through the command line."""
    from tests.conftest import write_table_dataset

    root = write_table_dataset(tmp_path / "table")
    table = pd.read_csv(root / "train.csv")
    table.loc[1, "lat"] = 200.0  # line 3 of the file
    table.to_csv(root / "train.csv", index=False)
    data = tmp_path / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "class_path": "ImageTextLocationDataModule",
                    "init_args": {"root": str(root), "batch_size": 4},
                }
            }
        )
    )
    code, err = _command_line(
        monkeypatch,
        capsys,
        "fit",
        "--config",
        "configs/flavars.yaml",
        "--config",
        str(data),
        "--trainer.logger=false",
        f"--trainer.default_root_dir={tmp_path / 'runs'}",
    )
    assert code == 1 and "Traceback" not in err and len(err.splitlines()) <= 3
    assert err.startswith(
        f"zoo: error: {root / 'train.csv'}: latitude 200.0 on line(s) 3 is not a "
        "number in [-90, 90] degrees (column 'lat')"
    )


def test_missing_mandatory_value_names_the_key(monkeypatch, capsys, tmp_path):
    """Row 'root: ??? in a YAML'."""
    override = tmp_path / "missing.yaml"
    override.write_text("data:\n  init_args:\n    root: ???\n")
    code, err = _command_line(
        monkeypatch, capsys, "fit", "--config", "configs/flavars.yaml", "--config", str(override)
    )
    assert code == 1 and "data.init_args.root is required" in err and "Traceback" not in err
    assert len(err.splitlines()) <= 3


def test_misspelt_key_gets_did_you_mean(monkeypatch, capsys):
    code, err = _command_line(
        monkeypatch,
        capsys,
        "fit",
        "--config",
        "configs/flavars.yaml",
        "--model.init_args.embed_dimm=64",
    )
    assert code == 2 and "Did you mean model.init_args.embed_dim?" in err
    assert not err.startswith("usage:")
    assert did_you_mean(
        "Unrecognized arguments: --trainer.max_epoch=1",
        ["--trainer.max_epochs", "--trainer.max_steps"],
    ) == ["--trainer.max_epoch is not an option. Did you mean --trainer.max_epochs?"]


def test_prediction_writers_never_overwrite(tmp_path):
    """Row 'predict overwrites predictions.jsonl': an error before predicting, unless overwrite."""
    from zoo.callbacks import MaskPredictionWriter
    from zoo.models import PredictionWriter

    class _Trainer:
        world_size, global_rank = 1, 0

    earlier = tmp_path / "predictions.jsonl"
    earlier.write_text('{"answer": "kept"}\n')
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        PredictionWriter(str(earlier)).setup(_Trainer(), None, "predict")
    assert earlier.read_text() == '{"answer": "kept"}\n'
    PredictionWriter(str(earlier), overwrite=True).setup(_Trainer(), None, "predict")
    (tmp_path / "masks" / "a").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        MaskPredictionWriter(str(tmp_path / "masks")).setup(_Trainer(), None, "predict")
    MaskPredictionWriter(str(tmp_path / "new")).setup(_Trainer(), None, "predict")


def test_predict_and_test_open_no_wandb_run(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    from zoo.session import Session, trainer_arguments

    wandb = WandbLogger(save_dir=str(tmp_path), offline=True)
    for subcommand in ("test", "predict"):
        out = trainer_arguments(
            Session(subcommand, tmp_path), {"logger": wandb, "callbacks": []}, {}
        )
        assert out["logger"] is False
    assert wandb._experiment is None and not (tmp_path / "wandb").exists()


def test_mistyped_embedded_root_is_generated_with_a_log_line(tmp_path, caplog):
    """Row 'a mistyped embedded-data root': generated, but said; a real-data root never is."""
    from zoo.data.datamodules import EmbeddedSource, ImageTextLocationDataModule

    caplog.set_level(logging.WARNING, "zoo")
    source = EmbeddedSource(
        str(tmp_path / "data" / "embeded"), 32, 0, {"train": 2, "val": 1, "test": 1}
    )
    source.prepare()
    assert f"data root {tmp_path / 'data' / 'embeded'} does not exist: generating" in caplog.text
    caplog.clear()
    source.prepare()  # the complete copy is reused, silently
    assert "generating" not in caplog.text
    real = ImageTextLocationDataModule(root=str(tmp_path / "skyscrpt"))
    real.prepare_data()
    with pytest.raises(FileNotFoundError):
        real.setup("fit")
    assert not (tmp_path / "skyscrpt").exists()


def test_mask_size_mismatch_stops_setup_naming_the_sample():
    """Row 'a mask whose size differs from its image': found in setup, before the first step."""
    import numpy as np

    from zoo.data.referring import ReferringDataset

    class Broken(ReferringDataset):
        def __init__(self):
            self.split, self.per_ref = "train", False
            self.refs = [[{"ref_id": 0}], [{"ref_id": 1}]]
            self.sentence_index = [None, None]
            self.parts = []

        def _image(self, index):
            return torch.zeros(3, 8, 8)

        def _mask(self, index, ref):
            return np.zeros((8, 8) if index == 0 else (8, 6))

        def _sample_name(self, index):
            return f"img{index}"

    with pytest.raises(
        ValueError, match=r"sample 1 \(img1\) of the train split: mask size .*\(8, 6\)"
    ):
        Broken().verify(progress=False)


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        (
            "--data.init_args.num_train=16",
            "data.init_args.num_train is not an argument of "
            "EmbeddedDataModule. It was renamed: use data.init_args.splits.train",
        ),
        (
            "--model.init_args.lr=0.1",
            "model.init_args.lr is not an argument of FLAVARS. It was "
            "renamed: use model.init_args.optimizer.lr",
        ),
        (
            "--model.init_args.mim_weight=0",
            "It was renamed: use model.init_args.objectives.loss_weights.mim",
        ),
    ],
)
def test_renamed_key_names_the_new_one(monkeypatch, capsys, arg, message):
    """Issue 21: an old key (CHANGELOG's breaking renames) names its new key, from the command
    line and from a YAML."""
    code, err = _command_line(monkeypatch, capsys, "fit", "--config", "configs/flavars.yaml", arg)
    assert code == 2 and message in err.splitlines()[0]


def test_renamed_key_in_a_yaml_and_an_evaluation_config(monkeypatch, capsys, tmp_path):
    from zoo.evaluation.config import load_evaluations

    old = tmp_path / "old.yaml"
    old.write_text("model:\n  init_args:\n    image_encoder: zoo_vit_tiny\n")
    code, err = _command_line(
        monkeypatch, capsys, "fit", "--config", "configs/flavars.yaml", "--config", str(old)
    )
    assert code == 2 and "It was renamed: use model.init_args.vision.name" in err
    spec = yaml.safe_load((ROOT / "configs/eval/spacenet1_upernet.yaml").read_text())
    spec["init_args"]["lr"] = spec["init_args"].pop("optimizer")["lr"]  # the flat key of old
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match=r"init_args.lr was renamed: use init_args.optimizer.lr"):
        load_evaluations([str(tmp_path / "eval.yaml")])
