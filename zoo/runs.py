"""One folder per run: ``<default_root_dir>/<name>/version_N/`` and what goes into it.

A fit writes ``checkpoints/`` (the best and the true last checkpoint, and the one taken at an
interruption), ``config.yaml`` (the resolved config) and ``metrics.csv`` (a CSV logger beside
W&B) into its version folder; ``<name>/latest`` points at the newest version. ``--ckpt_path
last`` means the newest checkpoint of the experiment (every version), and resuming from a
checkpoint of a version folder continues that folder, its ``metrics.csv`` and its W&B run.

``<default_root_dir>`` is ``trainer.default_root_dir`` (``runs/<model>`` in the zoo's configs)
and ``<name>`` the logger's ``name`` (``flavars-embedded``), else the model's class name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from zoo.io import atomic_write_text, remove_stale_temporaries

__all__ = [
    "RunCSVLogger",
    "RunFolder",
    "RunRecord",
    "newest_checkpoint",
    "next_version",
    "run_folder_of",
]

_VERSION = re.compile(r"version_(\d+)")


@dataclass(frozen=True)
class RunFolder:
    """``experiment/version_N``: one run of an experiment.

    Attributes:
        experiment: ``<default_root_dir>/<name>``.
        version: ``N``.
    """

    experiment: Path
    version: int

    @property
    def path(self) -> Path:
        """The version folder."""
        return self.experiment / f"version_{self.version}"

    @property
    def checkpoints(self) -> Path:
        """Where every checkpoint of the run goes."""
        return self.path / "checkpoints"

    def create(self) -> RunFolder:
        """Make the folders, drop temporary files a killed writer left, point ``latest`` here."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.checkpoints)
        remove_stale_temporaries(self.path)
        point_latest(self.experiment, self.path.name)
        return self


def point_latest(experiment: Path, target: str) -> None:
    """Make ``experiment/latest`` a relative symlink to ``target``, replaced atomically."""
    link = experiment / "latest"
    tmp = experiment / f".latest.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:  # a file system without symlinks: a one-line text file instead
        tmp.unlink(missing_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        link.write_text(target + "\n")


def _versions(experiment: Path) -> list[int]:
    if not experiment.is_dir():
        return []
    return sorted(
        int(m.group(1))
        for p in experiment.iterdir()
        if p.is_dir() and not p.is_symlink() and (m := _VERSION.fullmatch(p.name))
    )


def next_version(experiment: Path) -> int:
    """The first unused ``N`` of ``experiment/version_N``."""
    versions = _versions(experiment)
    return versions[-1] + 1 if versions else 0


def newest_checkpoint(experiment: Path) -> Path | None:
    """The most recently written ``.ckpt`` of any version of ``experiment`` (None if none)."""
    found = [
        p
        for v in _versions(experiment)
        for p in (experiment / f"version_{v}" / "checkpoints").glob("*.ckpt")
        if p.is_file()
    ]
    return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None


def run_folder_of(checkpoint: Path) -> RunFolder | None:
    """The run a checkpoint belongs to, when it lies in ``<experiment>/version_N/checkpoints``."""
    checkpoint = Path(checkpoint).resolve()
    folder = checkpoint.parent
    match = _VERSION.fullmatch(folder.parent.name)
    if folder.name != "checkpoints" or match is None:
        return None
    return RunFolder(folder.parent.parent, int(match.group(1)))


class RunRecord(Callback):
    """Store in every checkpoint what a resume needs to continue the same run: the run folder,
    the W&B run id and the model's class (checked against the config before loading).

    The record is read from the trainer when the checkpoint is written (Lightning asks for a
    callback's ``state_dict`` before its ``on_save_checkpoint``, so a record kept there would be
    the previous checkpoint's, empty in a process's first one). Read it back from a checkpoint
    file with :func:`record_of`.
    """

    def __init__(self, run: RunFolder | None = None) -> None:
        self.run = run
        self._trainer: Trainer | None = None

    @property
    def state_key(self) -> str:
        return "RunRecord"

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = None

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        module = trainer.lightning_module if trainer is not None else None
        model_class = (
            None if module is None else f"{type(module).__module__}.{type(module).__qualname__}"
        )
        record: dict[str, Any] = {
            "model_class": model_class,
            "wandb_id": wandb_id(trainer) if trainer is not None else None,
        }
        if self.run is not None:
            record |= {"experiment": str(self.run.experiment), "version": self.run.version}
        return record


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows a previous part of the run wrote (Lightning's
    deletes ``metrics.csv`` when the folder exists) except those at or after ``resume_step``
    (logged after the checkpoint a resume starts from, by a run that was killed)."""

    def __init__(self, log_dir: str, resume_step: int | None) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if self.resume_step is None or not path.is_file() or not path.stat().st_size:
            return
        rows = pd.read_csv(path)
        if "step" in rows and (rows["step"] >= self.resume_step).any():
            kept = rows[rows["step"] < self.resume_step]
            atomic_write_text(path, kept.to_csv(index=False))
        self.metrics_keys = list(rows.columns)  # new keys extend the existing header


class RunCSVLogger(CSVLogger):
    """The run folder's ``metrics.csv``; a resumed run (``resume_step``: the checkpoint's global
    step) appends to the rows of the run it continues."""

    def __init__(self, run: RunFolder, resume_step: int | None = None) -> None:
        super().__init__(run.experiment.parent, run.experiment.name, run.version)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self.resume_step)
        return self._experiment


def wandb_id(trainer: Trainer) -> str | None:
    """The id of the trainer's W&B run, if it has one that has started."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and logger.version is not None:
            return str(logger.version)
    return None


def record_of(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`RunRecord` of a loaded checkpoint (empty when it has none)."""
    callbacks = checkpoint.get("callbacks")
    record = callbacks.get("RunRecord") if isinstance(callbacks, Mapping) else None
    return dict(record) if isinstance(record, Mapping) else {}
