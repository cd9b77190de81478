"""Where pretrained parts come from, and building a model without them.

A zoo model is often built from pretrained parts: a timm backbone, a Hugging Face LLM, BERT,
CLIP, a FLAVA or LLaVA folder, a packaged model, a previous stage's checkpoint. A trained
model's checkpoint already holds every weight, so loading it must not need those sources
again (a colleague may have neither the folder nor the network). Two halves:

- while a model is built normally, each builder that reads a pretrained source's configuration
  marks the module it returns with that configuration (:func:`mark_source`);
  :func:`collect_sources` gathers them from a model, and the checkpoint stores them
  (:mod:`zoo.model_contents`);
- inside :func:`architecture_only` (what :func:`zoo.load` and ``load_from_checkpoint`` use),
  builders create the same architecture from the stored configurations (:func:`stored_source`)
  with random weights, read no pretrained weights and load no stage checkpoint: the
  checkpoint's state dict fills them right after.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "architecture_only",
    "building_architecture_only",
    "collect_sources",
    "mark_source",
    "stored_source",
]

M = TypeVar("M", bound=nn.Module)

#: The attribute a builder sets on the module it built from a pretrained source.
SOURCE_ATTRIBUTE = "_zoo_source"
_STORED: ContextVar[Mapping[str, dict[str, Any]] | None] = ContextVar(
    "zoo_architecture_only", default=None
)


def mark_source(module: M, name: str, config: Mapping[str, Any]) -> M:
    """Record on ``module`` the configuration of the pretrained source it was built from.

    Args:
        module: the module the builder returns.
        name: the source as the config names it (a Hugging Face id, a folder, a timm name).
        config: what rebuilds the architecture without the source (plain JSON types, e.g. a
            ``PretrainedConfig.to_dict()``).

    Returns:
        ``module``, marked.
    """
    object.__setattr__(module, SOURCE_ATTRIBUTE, (str(name), dict(config)))
    return module


def collect_sources(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The configurations of every pretrained source a model was built from.

    Args:
        model: the model.

    Returns:
        ``{source name: configuration}`` of every marked submodule.
    """
    sources: dict[str, dict[str, Any]] = {}
    for module in model.modules():
        marked = getattr(module, SOURCE_ATTRIBUTE, None)
        if marked is not None:
            sources[marked[0]] = marked[1]
    return sources


@contextmanager
def architecture_only(sources: Mapping[str, dict[str, Any]]) -> Iterator[None]:
    """Build models from stored source configurations only: no weights read, no downloads.

    Args:
        sources: :func:`collect_sources` of the model as it was trained.

    Yields:
        Nothing; builders inside see :func:`building_architecture_only` true.
    """
    token = _STORED.set(dict(sources))
    try:
        yield
    finally:
        _STORED.reset(token)


def building_architecture_only() -> bool:
    """Whether the model being built takes every weight from a checkpoint right after.

    Returns:
        True inside :func:`architecture_only`.
    """
    return _STORED.get() is not None


def stored_source(name: str) -> dict[str, Any] | None:
    """The stored configuration of a source, inside :func:`architecture_only`.

    Args:
        name: the source as the config names it.

    Returns:
        The configuration; None outside :func:`architecture_only`.

    Raises:
        KeyError: inside it, when the checkpoint stored no configuration for ``name`` (the
            message says how to load such a checkpoint).
    """
    stored = _STORED.get()
    if stored is None:
        return None
    if name not in stored:
        raise KeyError(
            f"the checkpoint stores no configuration for the pretrained source {name!r} (it "
            f"has {sorted(stored) or 'none'}): it was written before the zoo stored them; "
            "load it where that source is available, with zoo.load(path, config=<the run's "
            "config.yaml>)"
        )
    return stored[name]
