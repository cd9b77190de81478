"""The zoo's command line: ``zoo {fit,validate,test,predict,evaluate,compare,export} ...``.

``fit``, ``validate``, ``test`` and ``predict`` are a LightningCLI in subclass mode for both
model and data, so a YAML names any zoo model (``class_path: FLAVARS`` or
``zoo.models.FLAVARS``) and any datamodule. What the data knows, its tokenizer, class names and
image size, reaches the model through ``link_arguments``. ``evaluate`` and ``export`` take a
run's configs and checkpoint (:data:`COMMANDS`), ``compare`` those of a suite's variants; they
rebuild the model with :func:`build_from_configs`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from importlib import import_module
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

import zoo.data.captions  # noqa: F401
import zoo.data.coco_refs  # noqa: F401
import zoo.data.datamodules  # noqa: F401  (registers the datamodules' short names)
import zoo.data.images  # noqa: F401
import zoo.data.referring  # noqa: F401
import zoo.data.referring_benchmarks  # noqa: F401
import zoo.data.rsvqa  # noqa: F401
import zoo.data.scene_benchmarks  # noqa: F401
import zoo.data.scenes  # noqa: F401
import zoo.data.skyscript  # noqa: F401
import zoo.data.spacenet  # noqa: F401
import zoo.models  # noqa: F401  (registers the models' short names)
from zoo.checkpoints import resolve_ckpt_path
from zoo.encoders.llm import LLMSpec
from zoo.errors import TRACEBACK_FLAG, ZooArgumentParser, readable_errors
from zoo.io import atomic_write_text, read_state_dict
from zoo.session import Session, experiment_dir, prepare, trainer_arguments

__all__ = ["COMMANDS", "ZooCLI", "build_from_configs", "main"]

log = logging.getLogger(__name__)

#: ``zoo`` commands besides the Trainer's: the module whose ``main(argv)`` runs each.
COMMANDS = {
    "evaluate": "zoo.evaluation.cli",
    "compare": "zoo.evaluation.compare",
    "export": "zoo.export",
    "embed": "zoo.embed",
    "demo": "zoo.demo",
    "optimize": "zoo.optimize",
    "stats": "zoo.stats",
}


class SaveConfigToRun(SaveConfigCallback):
    """Save the resolved config with each fit, and log it to every logger as hyper-parameters.

    The model keeps it too (``training_config``), and its checkpoints carry it.

    The file goes into the run folder (``runs/<model>/<name>/version_N/config.yaml``) and, with
    W&B, into the W&B run's own folder too (synced with it).
    """

    run_dir: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        text = self.parser.dump(self.config, skip_none=False)
        if hasattr(pl_module, "training_config"):  # stored in its checkpoints (model_contents)
            pl_module.training_config = text
        if trainer.is_global_zero and stage == "fit":
            folders = [self.run_dir] if self.run_dir is not None else []
            folders += [
                Path(lg.experiment.dir) for lg in trainer.loggers if isinstance(lg, WandbLogger)
            ]
            for folder in folders:
                atomic_write_text(folder / self.config_filename, text)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = True

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": self.config.as_dict()})


class ZooCLI(LightningCLI):
    """LightningCLI with the zoo's links between data and model, its run folders and its
    checkpoint checks (:mod:`zoo.session`)."""

    session: Session | None = None
    #: The checkpoint :func:`build_from_configs` loaded (``last`` resolved), else None.
    ckpt_path: Path | None = None

    def parse_arguments(self, parser, args) -> None:
        self.argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Check ``--ckpt_path`` before anything loads it (:func:`zoo.session.prepare`): a
        Lightning checkpoint of the config's model, whose hyper-parameters apply except where
        the command line sets a value (Lightning's own version applies them over everything)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return

        def apply(hparams: dict) -> None:
            model = {"class_path": self.config[subcommand].model.class_path, "dict_kwargs": hparams}
            self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

        self.session = prepare(subcommand, self.config[subcommand], self.argv, apply)
        if self.session.ckpt_path is not None:
            # ``apply`` replaced ``self.config``: write the resolved path (``last`` -> a file)
            # into the namespace the Trainer reads, or Lightning would get the literal "last".
            self.config[subcommand].ckpt_path = str(self.session.ckpt_path)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        if self.session is not None:
            subcommand = self.subcommand
            trainer = self._get(self.config_init, "trainer", default={})
            kwargs = (
                trainer_arguments(self.session, trainer, self.config[subcommand].trainer) | kwargs
            )
        built = super().instantiate_trainer(**kwargs)
        for callback in built.callbacks:
            if isinstance(callback, SaveConfigToRun) and self.session and self.session.run:
                callback.run_dir = self.session.run.path
        return built

    def before_fit(self) -> None:
        """Say where this fit writes, before it starts."""
        if (
            self.session is not None
            and self.session.run is not None
            and self.trainer.is_global_zero
        ):
            log.info("run folder: %s", self.session.run.path)

    def after_fit(self) -> None:
        """Say again, after the metrics table, where the checkpoints and metrics are."""
        if (
            self.session is not None
            and self.session.run is not None
            and self.trainer.is_global_zero
        ):
            log.info("wrote checkpoints, metrics.csv and config.yaml to %s", self.session.run.path)

    def add_arguments_to_parser(self, parser) -> None:
        # A LLaVA checkpoint also sets the data's tokenizer, image size and mean/std.
        parser.link_arguments("model.init_args.llava", "data.init_args.llava")
        # A generator's LLM (zoo.encoders.llm.LLMSpec) gives the data its tokenizer and
        # conversation format: the LLM is named once, on the model.
        parser.link_arguments(
            "model.init_args.llm",
            "data.init_args.llm",
            compute_fn=lambda llm: asdict(LLMSpec.of(llm)),
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="prediction writers may replace the output of an earlier run",
        )
        parser.add_argument(
            TRACEBACK_FLAG,
            action="store_true",
            help="show the full traceback of a configuration or data error (or ZOO_TRACEBACK=1)",
        )
        parser.link_arguments("data.init_args.image_size", "model.init_args.image_size")
        parser.link_arguments(
            "data",
            "model.init_args.tokenizer",
            compute_fn=lambda data: data.tokenizer,
            apply_on="instantiate",
        )
        parser.link_arguments(
            "data",
            "model.init_args.class_names",
            compute_fn=lambda data: data.class_names,
            apply_on="instantiate",
        )
        # The bands the data reads reach every family's vision side (zoo.data.bands).
        parser.link_arguments(
            "data",
            "model.init_args.in_channels",
            compute_fn=lambda data: getattr(data, "num_channels", 3),
            apply_on="instantiate",
        )
        # FLAVARS: the data uses the FLAVA folder's tokenizer, image size and mean / std.
        parser.link_arguments("model.init_args.flava.folder", "data.init_args.processor")


_EPILOG = (
    "Also: zoo evaluate (a checkpoint over evaluation configs, like the papers), zoo compare "
    "(an ablation suite's variants side by side), zoo stats (per-band statistics of the "
    "data), zoo export "
    "(safetensors weights, LoRA merged), zoo embed (image embeddings of a folder as GeoParquet), "
    "zoo demo (a local Gradio page) and zoo optimize (a data config as LitData streaming "
    "shards); see zoo <command> --help."
)


def build_from_configs(
    configs: Sequence[str | Path],
    ckpt_path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> ZooCLI:
    """A run's model, datamodule and resolved config, rebuilt from its config files.

    Nothing runs and nothing is logged; ``ckpt_path`` (a Lightning checkpoint, a state-dict
    file or a safetensors export) gives the weights, else the model keeps those its config
    initializes. The CLI parses only these arguments, never ``sys.argv``, so ``zoo evaluate``
    and ``zoo export`` can call it from inside their own command line. ``overrides`` are
    further ``--key=value`` arguments (``zoo embed``, ``zoo demo``).
    """
    args = [*(a for c in configs for a in ("--config", str(c))), *overrides]
    with warnings.catch_warnings():
        # Whenever sys.argv holds arguments LightningCLI warns that args= is given too; it
        # still parses args= alone.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = main([*args, "--trainer.logger=false"], run=False)
    found = getattr(cli.datamodule, "preprocessing", None)
    if found is not None and hasattr(cli.model, "preprocessing"):  # as a fit would keep it
        cli.model.preprocessing = found
    if ckpt_path is None:
        log.warning("no checkpoint: the model keeps the weights its config initializes")
    else:
        # The experiment is named by the config's logger, which this rebuild turned off: read
        # it from the configs as given, so ``last`` finds the fit's run folder.
        config = cli.parser.parse_args(args) if str(ckpt_path) == "last" else cli.config
        path = resolve_ckpt_path(str(ckpt_path), experiment_dir(config), allow_folder=True)
        if path.suffix == ".safetensors":  # a zoo export: tied tensors were written once
            from safetensors.torch import load_model

            load_model(cli.model, str(path))
        else:
            cli.model.load_state_dict(read_state_dict(path, "--ckpt_path"))
        cli.ckpt_path = path
    return cli


def run_parser(
    prog: str, doc: str | None, ckpt_help: str, ckpt_required: bool = False, **kwargs: Any
) -> argparse.ArgumentParser:
    """The command line shared by ``zoo evaluate/export/embed/demo``: ``--config`` (repeatable,
    composed left to right) and ``--ckpt_path``, with the module docstring's first line as the
    description; add the command's own arguments to the result."""
    description = (doc or prog).splitlines()[0].replace("``", "")
    parser = argparse.ArgumentParser(prog=prog, description=description, **kwargs)
    parser.add_argument("--config", action="append", required=True, help="the run's config(s)")
    parser.add_argument("--ckpt_path", required=ckpt_required, help=ckpt_help)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Write to the ``sys.stderr`` of the moment (a test's captured stream, a redirect made
    after the first command), not the one there was when the handler was made."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging() -> None:
    """Show the zoo's INFO lines (e.g. where the embedded dataset was written) on stderr."""
    log = logging.getLogger("zoo")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def _finish_open_tracking_run() -> None:
    """Close a W&B run a failed command left open (marked failed), so that the next command in
    the same process (a notebook, a test) starts its own run instead of writing into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1)


def main(args: list[str] | None = None, run: bool = True) -> Any:
    """Entry point of ``zoo`` and ``python -m zoo``.

    ``evaluate`` and ``export`` as the first argument run that command (returning what its
    ``main`` returns); anything else goes to the LightningCLI (``args=None`` reads
    ``sys.argv``), which it returns. Reading ``sys.argv``, it is the command line: a
    configuration or data error prints its message alone (:mod:`zoo.errors`); with ``args``
    the exception propagates.
    """
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, Sequence) and argv and argv[0] in COMMANDS:
        command = import_module(COMMANDS[argv[0]]).main
        if args is None:  # the command line: errors a person can read, as for fit
            return readable_errors(lambda: command(list(argv[1:])), argv)
        return command(list(argv[1:]))
    configure_logging()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")

    def build() -> ZooCLI:
        try:
            return _cli()
        except BaseException:
            _finish_open_tracking_run()
            raise

    def _cli() -> ZooCLI:
        return ZooCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=SaveConfigToRun,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"parser_mode": "omegaconf", "epilog": _EPILOG},
            parser_class=ZooArgumentParser,
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )

    if args is None:  # the command line: errors a person can read (zoo.errors)
        return readable_errors(build, argv)
    return build()


if __name__ == "__main__":
    main()
