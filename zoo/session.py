"""What a ``zoo`` command sets up around the Trainer: the run folder, the loggers, the
checkpoint checks and the callbacks of interruption and exact resume.

:class:`zoo.main.ZooCLI` calls :func:`prepare` once the config is parsed (before anything is
built) and :func:`trainer_arguments` when it builds the Trainer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.plugins.io import CheckpointIO

from zoo.callbacks.summary import MetricsSummary
from zoo.checkpoints import (
    check_model_class,
    command_line_keys,
    merge_hyperparameters,
    read_lightning_checkpoint,
    resolve_ckpt_path,
)
from zoo.resume import AtomicCheckpointIO, ExactResume, InterruptCheckpoint
from zoo.runs import RunCSVLogger, RunFolder, RunRecord, next_version, record_of, run_folder_of

__all__ = ["Session", "experiment_dir", "prepare", "trainer_arguments"]

log = logging.getLogger(__name__)


@dataclass
class Session:
    """What :func:`prepare` decided for one command.

    Attributes:
        subcommand: ``fit``, ``validate``, ``test`` or ``predict``.
        experiment: ``<default_root_dir>/<name>``.
        run: the fit's version folder (None for the other commands).
        ckpt_path: the checked ``--ckpt_path`` (``last`` resolved).
        wandb_id: the W&B run a resumed fit continues.
        resume_step: the global step it continues from.
        overwrite: prediction writers may replace earlier outputs.
    """

    subcommand: str
    experiment: Path
    run: RunFolder | None = None
    ckpt_path: Path | None = None
    wandb_id: str | None = None
    resume_step: int | None = None
    overwrite: bool = False
    warnings: list[str] = field(default_factory=list)


def _logger_configs(logger: Any) -> list[Any]:
    if logger in (None, False, True):
        return []
    return list(logger) if isinstance(logger, list) else [logger]


def experiment_dir(config: Any) -> Path:
    """``<trainer.default_root_dir>/<name>``: the logger's ``name`` (the W&B run name), else
    the model's class name."""
    trainer = config.get("trainer") or {}
    root = Path(trainer.get("default_root_dir") or "runs")
    for logger in _logger_configs(trainer.get("logger")):
        name = (logger.get("init_args") or {}).get("name") if hasattr(logger, "get") else None
        if name:
            return root / str(name)
    return root / str(config.model.class_path).rpartition(".")[2].lower()


def prepare(subcommand: str, config: Any, argv: list[str], apply_hparams: Any) -> Session:
    """Resolve and check ``--ckpt_path``, apply its hyper-parameters (``apply_hparams(dict)``)
    and choose the run folder; ``config`` is the subcommand's parsed namespace."""
    session = Session(subcommand, experiment_dir(config), overwrite=bool(config.get("overwrite")))
    value = config.get("ckpt_path")
    if not value and subcommand == "fit":
        value = _requeued_checkpoint(config)
    checkpoint: dict[str, Any] = {}
    if value:
        path = resolve_ckpt_path(str(value), session.experiment)
        checkpoint = read_lightning_checkpoint(path)
        check_model_class(checkpoint, str(config.model.class_path), path)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        init_args = config.model.get("init_args")
        current = init_args.as_dict() if hasattr(init_args, "as_dict") else dict(init_args or {})
        apply, messages = merge_hyperparameters(hparams, current, command_line_keys(argv))
        for message in messages:
            log.warning(message)
        session.warnings = messages
        if apply:
            apply_hparams(apply)
        session.ckpt_path = path
        config.ckpt_path = str(path)
    if subcommand == "fit":
        record = record_of(checkpoint)
        resumed = run_folder_of(session.ckpt_path) if session.ckpt_path else None
        if resumed is None and record.get("experiment") and Path(record["experiment"]).is_dir():
            resumed = RunFolder(Path(record["experiment"]), int(record["version"]))
        if resumed is not None:
            session.run = resumed
            session.wandb_id = record.get("wandb_id")
            session.resume_step = int(checkpoint.get("global_step", 0))
            log.info("resuming run %s", resumed.path)
        else:
            session.run = RunFolder(session.experiment, next_version(session.experiment))
    return session


def _requeued_checkpoint(config: Any) -> str | None:
    """Under SLURM, the newest ``hpc_ckpt_N.ckpt`` that Lightning's requeue handler saved in
    ``trainer.default_root_dir`` (a requeued job resumes from it, as Lightning does)."""
    if not SLURMEnvironment.detect():
        return None
    root = Path((config.get("trainer") or {}).get("default_root_dir") or ".")
    found = sorted(root.glob("hpc_ckpt_*.ckpt"), key=lambda p: int(p.stem.rpartition("_")[2] or 0))
    if not found:
        return None
    log.info("SLURM requeue: resuming from %s", found[-1])
    return str(found[-1])


def _wandb(logger: WandbLogger, config: Any, wandb_id: str | None) -> WandbLogger:
    """The config's W&B logger, continuing run ``wandb_id`` when given (rebuilt from its init
    arguments: W&B starts lazily, so nothing was opened yet)."""
    if wandb_id is None:
        return logger
    init_args = dict(config.get("init_args") or {}) if hasattr(config, "get") else {}
    init_args = {k: v for k, v in init_args.items() if v is not None} | {
        "id": wandb_id,
        "resume": "allow",
    }
    init_args.pop("version", None)
    return type(logger)(**init_args)


def trainer_arguments(session: Session, trainer: dict[str, Any], config: Any) -> dict[str, Any]:
    """Loggers, callbacks and plugins for the Trainer, from its instantiated config ``trainer``
    and its parsed config ``config`` (the subcommand's ``trainer`` namespace)."""
    loggers = _logger_configs(trainer.get("logger"))
    logger_configs = _logger_configs(config.get("logger"))
    callbacks: list[Callback] = list(trainer.get("callbacks") or [])
    plugins = trainer.get("plugins") or []
    plugins = list(plugins) if isinstance(plugins, list) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    out: dict[str, Any] = {"plugins": plugins}

    if session.subcommand == "fit":
        run = session.run.create()
        new_loggers: list[Logger] = []
        if trainer.get("logger") is not False:
            new_loggers.append(RunCSVLogger(run, session.resume_step))
        for logger, cfg in zip(loggers, logger_configs + [None] * len(loggers), strict=False):
            if isinstance(logger, WandbLogger):
                logger = _wandb(logger, cfg, session.wandb_id)
            new_loggers.append(logger)
        out["logger"] = new_loggers or False
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(run.checkpoints)
        callbacks += [
            RunRecord(run),
            ExactResume(),
            InterruptCheckpoint(run.checkpoints),
            MetricsSummary(),
        ]
    else:
        kept = [logger for logger in loggers if not isinstance(logger, WandbLogger)]
        if len(kept) < len(loggers):
            log.info(
                "%s opens no W&B run (it would stay empty); metrics are printed", session.subcommand
            )
        out["logger"] = kept or False
        callbacks.append(InterruptCheckpoint())
        for callback in callbacks:
            if isinstance(callback, BasePredictionWriter) and hasattr(callback, "overwrite"):
                callback.overwrite = callback.overwrite or session.overwrite
    out["callbacks"] = callbacks
    return out
