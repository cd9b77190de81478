"""The zoo's command line: ``python -m zoo {fit,validate,test,predict} --config ...``.

A LightningCLI in subclass mode for both model and data, so a YAML names any zoo model
(``class_path: FLAVARS`` or ``zoo.models.FLAVARS``) and any datamodule. What the data knows,
its tokenizer, class names and image size, reaches the model through ``link_arguments``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

import zoo.data.captions  # noqa: F401
import zoo.data.datamodules  # noqa: F401  (registers the datamodules' short names)
import zoo.data.referring  # noqa: F401
import zoo.data.referring_benchmarks  # noqa: F401
import zoo.data.rsvqa  # noqa: F401
import zoo.data.scenes  # noqa: F401
import zoo.data.skyscript  # noqa: F401
import zoo.data.spacenet  # noqa: F401
import zoo.models  # noqa: F401  (registers the models' short names)

__all__ = ["ZooCLI", "main"]


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


def configure_logging() -> None:
    """Show the zoo's INFO lines (e.g. where the embedded dataset was written) on stderr."""
    log = logging.getLogger("zoo")
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def main(args: list[str] | None = None, run: bool = True) -> ZooCLI:
    """Entry point of ``zoo`` and ``python -m zoo``."""
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
        parser_kwargs={"parser_mode": "omegaconf"},
        auto_configure_optimizers=False,
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
