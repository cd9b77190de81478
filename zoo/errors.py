"""Errors a person can read: the message alone, in one block, and the traceback on request.

On the command line (``zoo ...``), a configuration or data error raised by the zoo's own checks
(``ValueError``, ``FileNotFoundError`` and the other ``OSError`` checks, a checkpoint that does
not fit) prints ``zoo: error: <message>`` and exits 1; a jsonargparse error prints its message
without the usage lines, with "did you mean" for a misspelt key, and exits 2; OmegaConf's
``???`` says which key is required. ``--traceback`` or ``ZOO_TRACEBACK=1`` shows the full
traceback instead. Errors from outside the zoo (a bug, a library's own failure) keep their
traceback.
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable
from importlib import import_module
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

__all__ = [
    "RENAMED_KEYS",
    "ZooArgumentParser",
    "did_you_mean",
    "readable_errors",
    "rename_hints",
    "renamed",
    "wants_traceback",
]

_PACKAGE = Path(__file__).resolve().parent
TRACEBACK_FLAG = "--traceback"
TRACEBACK_ENV = "ZOO_TRACEBACK"
_HINT = f"(run with {TRACEBACK_FLAG} or {TRACEBACK_ENV}=1 for the full traceback)"


#: Keys of a class's ``init_args`` that were renamed (CHANGELOG, "Config keys (breaking)"): the
#: old name and the new one, dotted inside ``init_args``. An old key in a YAML or on the command
#: line is an error that names its new key, where the class has it.
RENAMED_KEYS: dict[str, str] = {
    # the embedded datamodules' sizes, one block (EmbeddedSplits)
    "num_train": "splits.train",
    "num_val": "splits.val",
    "num_test": "splits.test",
    # every model's optimizer settings, one block (OptimizerConfig)
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "betas": "optimizer.betas",
    "warmup_fraction": "optimizer.warmup_fraction",
    # FLAVARS and the UPerNet probe: one name for the image backbone in every family
    "image_encoder": "vision.name",
    "image_pretrained": "vision.pretrained",
    "image_checkpoint": "vision.checkpoint",
    # FLAVARS' loss weights, one block (LossWeights) inside its objectives (Objectives)
    "mim_weight": "objectives.loss_weights.mim",
    "mlm_weight": "objectives.loss_weights.mlm",
    "itm_weight": "objectives.loss_weights.itm",
    "contrastive_weight": "objectives.loss_weights.contrastive",
    "location_weight": "objectives.loss_weights.location",
    # every family's image encoder, one specification (VisionSpec, issue 22)
    "vision_encoder": "vision.name",
    "vision_pretrained": "vision.pretrained",
    "vision_checkpoint": "vision.checkpoint",
    # FLAVARS' typed groups (issue 22): text, flava, fusion, location, objectives, evaluation
    "text_encoder": "text.name",
    "text_pretrained": "text.pretrained",
    "codebook": "flava.codebook",
    "fusion_width": "fusion.width",
    "fusion_layers": "fusion.layers",
    "fusion_heads": "fusion.heads",
    "legendre_polys": "location.legendre_polys",
    "location_hidden": "location.hidden",
    "location_layers": "location.layers",
    "location_checkpoint": "location.checkpoint",
    "loss_weights": "objectives.loss_weights",
    "mim_mask_ratio": "objectives.mim_mask_ratio",
    "mim_masking": "objectives.mim_masking",
    "mlm_probability": "objectives.mlm_probability",
    "itm_negatives": "objectives.itm_negatives",
    "itm_negative_probability": "objectives.itm_negative_probability",
    "itm_layout": "objectives.itm_layout",
    "temperature": "objectives.temperature",
    "knn_k": "evaluation.knn_k",
    "prompt_templates": "evaluation.prompt_templates",
    # the generators' LLM, one specification (LLMSpec): name, conversation format, dtype
    "llm_dtype": "llm.dtype",
    "llm_pretrained": "llm.pretrained",
    "gguf_file": "llm.gguf_file",
    # the generators' speed switches, one block (SpeedConfig)
    "activation_checkpointing": "speed.activation_checkpointing",
    "compile": "speed.compile",
    # Aquila's connector, one block (SFIConfig)
    "feature_stages": "sfi.feature_stages",
    "grid_size": "sfi.grid_size",
    "num_heads": "sfi.num_heads",
    "sfi_dim": "sfi.dim",
    "block": "sfi.block",
    "key_positions": "sfi.key_positions",
    "connector": "sfi.connector",
    "mda_layers": "sfi.mda_layers",
    # FUSE's views and injection, two blocks (FuseViews, FuseInjection)
    "global_layer": "views.global_layer",
    "detail_layers": "views.detail_layers",
    "window_sizes": "views.window_sizes",
    "canvas_size": "views.canvas_size",
    "stride_fraction": "views.stride_fraction",
    "detail_tokens": "views.detail_tokens",
    "multi_scale": "views.multi_scale",
    "inject_layers": "inject.layers",
    "injection": "inject.kind",
    "residual_init": "inject.residual_init",
    # GeoPix's decoder, memory, segmentation tokens and loss weights (four blocks)
    "decoder_dim": "decoder.dim",
    "decoder_depth": "decoder.depth",
    "decoder_heads": "decoder.heads",
    "upscale_stages": "decoder.upscale_stages",
    "token_pooling": "decoder.token_pooling",
    "coarse_to_fine": "decoder.coarse_to_fine",
    "shared_projector": "decoder.shared_projector",
    "use_memory": "memory.enabled",
    "memory_capacity": "memory.capacity",
    "memory_dim": "memory.dim",
    "memory_fusion": "memory.fusion",
    "seg_tokens_per_scale": "seg_tokens.per_scale",
    "seg_hidden": "seg_tokens.hidden",
    "bce_weight": "loss_weights.bce",
    "dice_weight": "loss_weights.dice",
}


def renamed(key: str, parameters: Iterable[str]) -> str | None:
    """The new name of the old ``key`` (dotted inside ``init_args``) when a class with
    ``parameters`` takes it, else None."""
    new = RENAMED_KEYS.get(key)
    return new if new is not None and new.split(".")[0] in set(parameters) else None


def rename_hints(message: str, prefix: str = "") -> list[str]:
    """ "<old> was renamed: use <new>" for each renamed key a jsonargparse ``message`` refuses
    (``Option 'lr' is not accepted`` under ``class_path '...'``, at any indentation)."""
    hints = []
    for class_path, body in re.findall(r"class_path '([\w.]+)':\n((?:[ \t]+.*\n?)+)", message):
        for key in re.findall(r"Option '(\w+)' is not accepted", body):
            new = renamed(key, _parameters(class_path))
            if new is not None:
                hints.append(f"{prefix}{key} was renamed: use {prefix}{new} (see CHANGELOG.md).")
    return hints


def wants_traceback(argv: Iterable[str]) -> bool:
    """``--traceback`` among the arguments, or ``ZOO_TRACEBACK`` set to a true value."""
    env = os.environ.get(TRACEBACK_ENV, "").strip().lower()
    return TRACEBACK_FLAG in argv or env not in ("", "0", "false", "no")


def _parameters(class_path: str) -> list[str]:
    """Keyword names a class takes, following ``**kwargs`` up its bases (as jsonargparse does)."""
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    names: list[str] = []
    for klass in inspect.getmro(cls):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))


def did_you_mean(message: str, options: Iterable[str] = ()) -> list[str]:
    """ "Did you mean" lines for the misspelt keys a jsonargparse ``message`` names.

    ``Option 'imag_encoder' is not accepted`` under ``class_path 'zoo.models.FLAVARS'`` is
    matched against FLAVARS' arguments; ``Unrecognized arguments: --trainer.max_epoch=1``
    against the parser's ``options``.
    """
    lines = []
    group = re.search(r'Parser key "([\w.]+)"', message)
    prefix = f"{group.group(1)}.init_args." if group else ""
    for class_path, body in re.findall(r"class_path '([\w.]+)':\n((?:\s{6,}.*\n?)+)", message):
        for key in re.findall(r"Option '(\w+)' is not accepted", body):
            parameters = _parameters(class_path)
            close = difflib.get_close_matches(key, parameters, n=1, cutoff=0.6)
            name = class_path.rpartition(".")[2]
            hint = f" Did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            new = renamed(key, parameters)
            if new is not None:
                hint = f" It was renamed: use {prefix}{new} (see CHANGELOG.md)."
            lines.append(f"{prefix}{key} is not an argument of {name}.{hint}")
    options = list(options)
    for arg in re.findall(r"(--[\w.@-]+)", message.partition("Unrecognized arguments:")[2]):
        close = difflib.get_close_matches(arg, options, n=1, cutoff=0.75)
        if close:
            lines.append(f"{arg} is not an option. Did you mean {', '.join(close)}?")
    return lines


class ZooArgumentParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are one block: the message (and "did you mean"),
    without the usage lines; exit code 2, as argparse's."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or wants_traceback(sys.argv):
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        options = [o.split("=")[0] for o in parser._option_string_actions]
        lines = did_you_mean(message, options)
        prog = parser.prog.replace(" [options]", "")
        text = "\n".join([*lines, message.rstrip()]) if lines else message.rstrip()
        sys.stderr.write(f"{prog}: error: {text}\n(see {prog} --help)\n")
        sys.exit(2)


def _raised_in_zoo(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is zoo code (its own check)."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(_PACKAGE)


def _missing_value(error: BaseException) -> str | None:
    """OmegaConf's ``???`` as "<key> is required", if ``error`` (or its cause) is one."""
    try:
        from omegaconf.errors import MissingMandatoryValue
    except ImportError:
        return None
    while error is not None:
        if isinstance(error, MissingMandatoryValue):
            key = getattr(error, "full_key", None) or "a value"
            return (
                f"{key} is required: the config leaves it as ???. Set it in a YAML or with "
                f"--{key}=..."
            )
        error = error.__cause__ or error.__context__
    return None


def _raised_in_jsonargparse(error: BaseException) -> bool:
    import jsonargparse

    frames = traceback.extract_tb(error.__traceback__)
    package = Path(jsonargparse.__file__).resolve().parent
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(package)


def _message(error: BaseException) -> str | None:
    """The readable message of a configuration or data error, or None to keep the traceback.

    A zoo check raised while jsonargparse builds a linked class comes wrapped in jsonargparse's
    "Does not validate against any of the Union subtypes"; its own lines are kept.
    """
    missing = _missing_value(error)
    if missing is not None:
        return missing
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (ValueError, OSError, KeyError)) and _raised_in_zoo(seen):
            return str(seen.args[0]) if isinstance(seen, KeyError) and seen.args else str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, ValueError) and _raised_in_jsonargparse(error):
        causes = re.findall(r"^\s+- (.+)$", str(error), flags=re.MULTILINE)
        causes = [c for c in causes if not c.startswith("Expected a <class 'NoneType'>")]
        return "\n".join(causes) if causes else str(error).strip()
    return None


def readable_errors(run: Callable[[], Any], argv: Iterable[str]) -> Any:
    """Run ``run()``; a configuration or data error prints as ``zoo: error: <message>`` and
    exits 1, unless the traceback was asked for."""
    if wants_traceback(argv):
        return run()
    try:
        return run()
    except Exception as error:
        message = _message(error)
        if message is None:
            raise
        sys.stderr.write(f"zoo: error: {message}\n{_HINT}\n")
        sys.exit(1)
