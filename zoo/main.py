"""The zoo's command line: ``zoo {fit,validate,test,predict,evaluate,export} ...``.

``fit``, ``validate``, ``test`` and ``predict`` are a LightningCLI in subclass mode for both
model and data, so a YAML names any zoo model (``class_path: FLAVARS`` or
``zoo.models.FLAVARS``) and any datamodule. What the data knows, its tokenizer, class names and
image size, reaches the model through ``link_arguments``. ``evaluate`` and ``export`` take a
run's configs and checkpoint (:data:`COMMANDS`); both rebuild the model with
:func:`build_from_configs`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

import zoo.data.captions  # noqa: F401
import zoo.data.coco_refs  # noqa: F401
import zoo.data.datamodules  # noqa: F401  (registers the datamodules' short names)
import zoo.data.referring  # noqa: F401
import zoo.data.referring_benchmarks  # noqa: F401
import zoo.data.rsvqa  # noqa: F401
import zoo.data.scene_benchmarks  # noqa: F401
import zoo.data.scenes  # noqa: F401
import zoo.data.skyscript  # noqa: F401
import zoo.data.spacenet  # noqa: F401
import zoo.models  # noqa: F401  (registers the models' short names)
from zoo.io import read_state_dict

__all__ = ["COMMANDS", "ZooCLI", "build_from_configs", "main"]

log = logging.getLogger(__name__)

#: ``zoo`` commands besides the Trainer's: the module whose ``main(argv)`` runs each.
COMMANDS = {"evaluate": "zoo.evaluation.cli", "export": "zoo.export"}


class SaveConfigToRun(SaveConfigCallback):
    """Save the resolved config with each run, and log it to every logger as hyper-parameters.

    With W&B the file goes into the run's own folder (synced with it), so consecutive runs
    never collide; with other loggers into the trainer's log folder, as Lightning does.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        logger = trainer.logger
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            path = Path(logger.experiment.dir) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config, path, skip_none=False, overwrite=True, multifile=self.multifile
            )
            self.already_saved = True
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": self.config.as_dict()})


class ZooCLI(LightningCLI):
    """LightningCLI with the zoo's links between data and model."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
        parser.link_arguments(
            "data", "model.init_args.tokenizer", compute_fn=lambda data: data.tokenizer,
            apply_on="instantiate",
        )
        parser.link_arguments(
            "data", "model.init_args.class_names", compute_fn=lambda data: data.class_names,
            apply_on="instantiate",
        )
        # FLAVARS: the data uses the FLAVA folder's tokenizer, image size and mean / std.
        parser.link_arguments("model.init_args.flava", "data.init_args.processor")


_EPILOG = (
    "Also: zoo evaluate (a checkpoint over evaluation configs, like the papers) and zoo export "
    "(safetensors weights, LoRA merged); see zoo evaluate --help and zoo export --help."
)


def build_from_configs(configs: Sequence[str | Path], ckpt_path: str | Path | None = None) -> ZooCLI:
    """A run's model, datamodule and resolved config, rebuilt from its config files.

    Nothing runs and nothing is logged; ``ckpt_path`` (a Lightning checkpoint, a state-dict
    file or a safetensors export) gives the weights, else the model keeps those its config
    initialises. The CLI parses only these arguments, never ``sys.argv``, so ``zoo evaluate``
    and ``zoo export`` can call it from inside their own command line.
    """
    args = [a for c in configs for a in ("--config", str(c))]
    with warnings.catch_warnings():
        # Whenever sys.argv holds arguments LightningCLI warns that args= is given too; it
        # still parses args= alone.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = main([*args, "--trainer.logger=false"], run=False)
    if ckpt_path is None:
        log.warning("no checkpoint: the model keeps the weights its config initialises")
    else:
        cli.model.load_state_dict(read_state_dict(ckpt_path, "--ckpt_path"))
    return cli


def configure_logging() -> None:
    """Show the zoo's INFO lines (e.g. where the embedded dataset was written) on stderr."""
    log = logging.getLogger("zoo")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Entry point of ``zoo`` and ``python -m zoo``.

    ``evaluate`` and ``export`` as the first argument run that command (returning what its
    ``main`` returns); anything else goes to the LightningCLI (``args=None`` reads
    ``sys.argv``), which it returns.
    """
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, Sequence) and argv and argv[0] in COMMANDS:
        return import_module(COMMANDS[argv[0]]).main(list(argv[1:]))
    configure_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    return ZooCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=SaveConfigToRun,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "omegaconf", "epilog": _EPILOG},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
