"""A checkpoint belongs to its model: checks made before Lightning loads ``--ckpt_path``.

* the file is a Lightning checkpoint (a truncated, foreign or plain-weights file is named, with
  what to do, instead of a torch traceback);
* its model class is the config's (an error naming both: a checkpoint of another family is
  never adopted);
* its hyper-parameters rebuild the model, except where the command line sets a value: the
  command line wins, and every value that differs from the checkpoint's is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib import import_module
from pathlib import Path
from typing import Any

from zoo.io import load_checkpoint
from zoo.runs import newest_checkpoint, record_of

__all__ = [
    "CheckpointError",
    "check_model_class",
    "command_line_keys",
    "merge_hyperparameters",
    "read_lightning_checkpoint",
    "resolve_ckpt_path",
    "upgrade_hyperparameters",
]

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A ``--ckpt_path`` that cannot be used, and why."""


def resolve_ckpt_path(value: str, experiment: Path, allow_folder: bool = False) -> Path:
    """``last``: the newest checkpoint of ``experiment`` (every version); else the path itself,
    which must exist (a file, or with ``allow_folder`` the folder of a sharded checkpoint).

    Every command that takes ``--ckpt_path`` resolves it here, so ``last`` means the same in
    all of them.
    """
    if value == "last":
        found = newest_checkpoint(experiment)
        if found is None:
            raise CheckpointError(
                f"--ckpt_path last: no checkpoint in {experiment} (looked in "
                f"{experiment}/version_*/checkpoints/). Run fit without --ckpt_path to start "
                "this experiment, or give a checkpoint file."
            )
        log.info("--ckpt_path last: %s", found)
        return found
    path = Path(value)
    if not (path.is_file() or (allow_folder and path.is_dir())):
        raise CheckpointError(
            f"--ckpt_path {path} does not exist; give a checkpoint file, or last for the newest "
            f"checkpoint of {experiment}"
        )
    return path


def read_lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (``weights_only``, memory-mapped) and check that Lightning wrote it."""
    try:
        data = load_checkpoint(path, "--ckpt_path", mmap=True)
    except RuntimeError as error:
        raise CheckpointError(str(error)) from error
    if not isinstance(data, Mapping) or not {"state_dict", "pytorch-lightning_version"} <= set(
        data
    ):
        found = sorted(map(str, data))[:8] if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(
            f"--ckpt_path {path} is not a Lightning checkpoint (no 'state_dict' and "
            f"'pytorch-lightning_version'; found {found}). Give a .ckpt written by zoo fit; plain "
            "or exported weights load through the model's stage.init_checkpoint."
        )
    return dict(data)


def _import(class_path: str) -> type | None:
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def checkpoint_model_class(checkpoint: Mapping[str, Any]) -> str | None:
    """The class path of the model that wrote ``checkpoint``, if it says."""
    hparams = checkpoint.get("hyper_parameters") or {}
    return hparams.get("_class_path") or record_of(checkpoint).get("model_class")


def check_model_class(checkpoint: Mapping[str, Any], class_path: str, path: str | Path) -> None:
    """Raise :class:`CheckpointError` naming both classes unless ``checkpoint`` holds a
    ``class_path`` model."""
    found = checkpoint_model_class(checkpoint)
    if found is None:
        return
    ours, theirs = _import(class_path), _import(found)
    same = ours is theirs if ours is not None and theirs is not None else found == class_path
    if not same:
        name = theirs.__name__ if theirs is not None else found
        wanted = ours.__name__ if ours is not None else class_path
        raise CheckpointError(
            f"--ckpt_path {path} holds a {name} model ({found}), but the config builds "
            f"{wanted} ({class_path}). Give a {wanted} checkpoint, or the config that {name} was "
            "trained with."
        )


def command_line_keys(argv: Iterable[str], group: str = "model") -> set[str]:
    """The ``group`` settings given on the command line, as dotted keys inside ``init_args``
    (``--model.init_args.optimizer.lr=0.5`` and ``--model.optimizer.lr 0.5`` give
    ``optimizer.lr``)."""
    keys = set()
    for arg in argv:
        if not arg.startswith(f"--{group}."):
            continue
        key = arg[2:].split("=", 1)[0].removeprefix(f"{group}.").removeprefix("init_args.")
        if key not in ("class_path", "help"):
            keys.add(key)
    return keys


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flatten(item, f"{prefix}{key}.")
        return out
    return {prefix[:-1]: list(value) if isinstance(value, tuple) else value}


def upgrade_hyperparameters(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyper-parameters in the keys of this version's model.

    The model class the checkpoint names (``_class_path``) upgrades the keys an earlier
    version saved, through its ``upgrade_hyperparameters`` class method when it has one (a
    family that regrouped its arguments maps the old flat keys there). Keys starting with
    ``_`` (Lightning's and jsonargparse's bookkeeping) are dropped.

    Args:
        hparams: the ``hyper_parameters`` entry of a Lightning checkpoint.

    Returns:
        The hyper-parameters the model's constructor takes now.
    """
    model_class = _import(str(hparams.get("_class_path") or ""))
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    if "llm" in hparams:  # a generator saved before the LLM spec: its keys in the spec's
        from zoo.encoders.llm import LLMSpec

        hparams = LLMSpec.upgrade(hparams)
    upgrade = getattr(model_class, "upgrade_hyperparameters", None)
    return dict(upgrade(hparams)) if callable(upgrade) else hparams


def merge_hyperparameters(
    hparams: Mapping[str, Any], config: Mapping[str, Any], explicit: set[str]
) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint's hyper-parameters to apply over ``config`` (the model's ``init_args``)
    and one message per value that differs.

    A key under an ``explicit`` (command-line) key keeps the config's value; every other
    differing value takes the checkpoint's, which the weights were trained with.
    """
    hparams = upgrade_hyperparameters(hparams)
    ours, theirs = _flatten(dict(config)), _flatten(hparams)

    def given(key: str) -> bool:
        return any(key == e or key.startswith(e + ".") for e in explicit)

    apply: dict[str, Any] = {}
    for key, value in theirs.items():  # nested groups keep the command line's sub-keys
        value = ours.get(key) if given(key) and key in ours else value
        *parents, leaf = key.split(".")
        node = apply
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    apply = {k: v for k, v in apply.items() if not given(k)}
    messages = []
    for key, value in theirs.items():
        if key not in ours or ours[key] is None or ours[key] == value:
            continue
        if given(key):
            messages.append(
                f"model.init_args.{key}: {ours[key]!r} from the command line "
                f"replaces the checkpoint's {value!r}"
            )
        else:
            messages.append(
                f"model.init_args.{key}: the checkpoint's {value!r} replaces the "
                f"config's {ours[key]!r} (the weights were trained with it)"
            )
    return apply, messages
