"""What a trained model carries besides its weights, so that it loads alone.

A zoo checkpoint (``checkpoint["zoo"]``, written by :meth:`zoo.models.base.ZooTask.on_save_checkpoint`)
and an exported folder (``config.json`` and the tokenizer files, :mod:`zoo.pretrained`) hold:

- the model class and its hyper-parameters (the checkpoint's own ``hyper_parameters``);
- the tokenizer's files (``save_pretrained`` output, bytes per file name);
- the image preprocessing (:class:`~zoo.preprocessing.Preprocessing`: size, mean / std, bands,
  padding) the training data used;
- the conversation format of a generator and the class names of a zero-shot head or memory;
- the resolved training config (YAML text) when the zoo CLI trained it;
- the configurations of the pretrained sources it was built from
  (:mod:`zoo.encoders.sources`), so it builds without them.

:func:`build_model` turns these back into a model (random weights, the caller loads the
state dict); :func:`load_checkpoint_model` does both for a Lightning checkpoint.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from zoo.checkpoints import upgrade_hyperparameters
from zoo.encoders.sources import architecture_only, collect_sources
from zoo.io import load_checkpoint
from zoo.preprocessing import Preprocessing

__all__ = [
    "CONTENTS_KEY",
    "ModelContents",
    "OlderCheckpointError",
    "build_model",
    "contents_of",
    "load_checkpoint_model",
    "model_class_path",
    "tokenizer_files",
    "tokenizer_from_files",
]


class OlderCheckpointError(ValueError):
    """A checkpoint written before zoo checkpoints carried their tokenizer and preprocessing."""


#: The checkpoint entry that holds the contents.
CONTENTS_KEY = "zoo"
#: Version of the contents' layout (bumped when a field changes meaning).
CONTENTS_FORMAT = 1


@dataclass
class ModelContents:
    """Everything besides the weights that inference needs.

    Args:
        model_class: the model's import path (``zoo.models.flavars.FLAVARS``).
        hyper_parameters: its constructor's arguments (plain types).
        tokenizer_files: the tokenizer's ``save_pretrained`` files, by name.
        preprocessing: the image preparation of its training data (None: unknown).
        conversation: a generator's conversation format.
        class_names: the classes of its zero-shot head or class-wise memory.
        config: the resolved training config (YAML), when the zoo CLI trained it.
        sources: the pretrained sources' configurations (:mod:`zoo.encoders.sources`).
        zoo_version: the zoo version that wrote it.
    """

    model_class: str
    hyper_parameters: dict[str, Any]
    tokenizer_files: dict[str, bytes] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None
    conversation: str | None = None
    class_names: list[str] = field(default_factory=list)
    config: str | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    zoo_version: str = ""

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint entry (plain types; the class and hyper-parameters stay where
        Lightning keeps them).

        Returns:
            The dict stored under :data:`CONTENTS_KEY`.
        """
        return {
            "format": CONTENTS_FORMAT,
            "zoo_version": self.zoo_version,
            "model_class": self.model_class,
            "tokenizer_files": dict(self.tokenizer_files),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
            "conversation": self.conversation,
            "class_names": list(self.class_names),
            "config": self.config,
            "sources": dict(self.sources),
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> ModelContents | None:
        """Read a Lightning checkpoint's contents.

        Args:
            checkpoint: the loaded checkpoint.

        Returns:
            The contents; None for a checkpoint written before the zoo stored them.
        """
        entry = checkpoint.get(CONTENTS_KEY)
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        if not entry or not entry.get("tokenizer_files"):
            return None
        preprocessing = entry.get("preprocessing")
        return cls(
            # a model the CLI did not build has no ``_class_path``: the entry names it too
            model_class=str(entry.get("model_class") or hparams.get("_class_path") or ""),
            hyper_parameters=hparams,
            tokenizer_files=dict(entry["tokenizer_files"]),
            preprocessing=None if preprocessing is None else Preprocessing.from_dict(preprocessing),
            conversation=entry.get("conversation"),
            class_names=list(entry.get("class_names") or []),
            config=entry.get("config"),
            sources=dict(entry.get("sources") or {}),
            zoo_version=str(entry.get("zoo_version", "")),
        )


def model_class_path(model: nn.Module) -> str:
    """The import path of a model's class, the public one where the zoo exports it.

    Args:
        model: the model.

    Returns:
        ``module.ClassName``.
    """
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    """A tokenizer's ``save_pretrained`` files.

    Args:
        tokenizer: the tokenizer.

    Returns:
        ``{file name: bytes}``.
    """
    with tempfile.TemporaryDirectory(prefix="zoo-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def tokenizer_from_files(files: Mapping[str, bytes]) -> PreTrainedTokenizerBase:
    """Rebuild a tokenizer from :func:`tokenizer_files`' output.

    Args:
        files: ``{file name: bytes}``.

    Returns:
        The tokenizer.
    """
    with tempfile.TemporaryDirectory(prefix="zoo-tokenizer-") as tmp:
        for name, data in files.items():
            (Path(tmp) / Path(name).name).write_bytes(data)
        return AutoTokenizer.from_pretrained(tmp)


def contents_of(model: nn.Module, config: str | None = None) -> ModelContents:
    """The contents of a zoo model as it is now.

    Args:
        model: a zoo model (its ``tokenizer``, ``preprocessing``, ``conversation`` and
            ``class_names`` where it has them).
        config: the resolved training config (YAML).

    Returns:
        The contents.
    """
    import zoo

    hparams = dict(getattr(model, "hparams", {}) or {})
    tokenizer = getattr(model, "tokenizer", None)
    return ModelContents(
        model_class=model_class_path(model),
        hyper_parameters=hparams,
        tokenizer_files=tokenizer_files(tokenizer) if tokenizer is not None else {},
        preprocessing=getattr(model, "preprocessing", None),
        conversation=getattr(model, "conversation", None),
        class_names=list(getattr(model, "class_names", None) or []),
        config=config,
        sources=collect_sources(model),
        zoo_version=zoo.__version__,
    )


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"the checkpoint names no model class ({path!r})")
    return getattr(__import__(module, fromlist=[name]), name)


def build_model(contents: ModelContents, **overrides: Any) -> nn.Module:
    """A model of the stored class and hyper-parameters, with random weights.

    Built :func:`~zoo.encoders.sources.architecture_only`: no pretrained weight is read and no
    stage checkpoint is loaded; load the state dict next.

    Args:
        contents: the stored contents.
        **overrides: constructor arguments that replace the stored ones.

    Returns:
        The model, with its ``preprocessing`` set.
    """
    cls = _import(contents.model_class)
    hparams = upgrade_hyperparameters(
        {**contents.hyper_parameters, "_class_path": contents.model_class}
    )
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}
    parameters = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in hparams.items() if k in parameters}
    if "tokenizer" in parameters:
        kwargs["tokenizer"] = tokenizer_from_files(contents.tokenizer_files)
    if "class_names" in parameters and contents.class_names:
        kwargs["class_names"] = list(contents.class_names)
    kwargs |= overrides
    with architecture_only(contents.sources):
        model = cls(**kwargs)
    if contents.preprocessing is not None:
        model.preprocessing = contents.preprocessing
    if contents.config is not None and hasattr(model, "training_config"):
        model.training_config = contents.config
    return model


def load_checkpoint_model(
    path: str | Path,
    map_location: Any = None,
    strict: bool = True,
    expected_class: type | None = None,
    **overrides: Any,
) -> nn.Module:
    """A zoo model and its weights from a Lightning checkpoint that carries its contents.

    Args:
        path: the checkpoint.
        map_location: where to put the weights (``torch.load``'s argument; default the CPU).
        strict: the state dict must match the model exactly.
        expected_class: the class the caller asked for (``FLAVARS.load_from_checkpoint``); a
            checkpoint of another family is an error.
        **overrides: constructor arguments that replace the stored ones.

    Returns:
        The model in eval mode, its weights loaded.

    Raises:
        OlderCheckpointError: a checkpoint without the contents (written before they were
            stored).
        ValueError: a checkpoint of another class than ``expected_class``.
    """
    checkpoint = load_checkpoint(path, "checkpoint")
    contents = ModelContents.from_checkpoint(checkpoint)
    if contents is None:
        raise OlderCheckpointError(
            f"{path} was written before zoo checkpoints carried their tokenizer and "
            "preprocessing: load it with zoo.load(path), which reads the run's config.yaml "
            "beside it (runs/<model>/<name>/version_N/config.yaml), or pass "
            "zoo.load(path, config=<that config>); or pass tokenizer= to load_from_checkpoint"
        )
    cls = _import(contents.model_class)
    if expected_class is not None and not issubclass(cls, expected_class):
        raise ValueError(
            f"{path} holds a {cls.__name__}, not a {expected_class.__name__}: call "
            f"{cls.__name__}.load_from_checkpoint, or zoo.load(path)"
        )
    model = build_model(contents, **overrides)
    state = checkpoint["state_dict"]
    if map_location is not None:
        state = {k: v.to(map_location) if torch.is_tensor(v) else v for k, v in state.items()}
    model.load_state_dict(state, strict=strict)
    return model.eval()
