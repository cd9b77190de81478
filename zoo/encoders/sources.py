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

A Hugging Face model's entry is :func:`hf_source` (its config, dtype, attention and generation
config) and :func:`build_hf_model` rebuilds it. A checkpoint that stores no entry for a source
(written before they were stored) reads the source's configuration where the source is
available (``stored_source``'s ``read``), else stops with :class:`MissingSourceError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = [
    "MissingSourceError",
    "architecture_only",
    "build_hf_model",
    "building_architecture_only",
    "collect_sources",
    "hf_source",
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


class MissingSourceError(KeyError):
    """A checkpoint stores no configuration for a pretrained source its model needs, and the
    source cannot be read here. A ``KeyError`` whose message prints as written (a plain
    ``KeyError`` shows its message quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


#: What a source's ``read`` may raise when the source is not there (a missing folder or
#: package, the Hub unreachable, a folder that holds something else).
_UNAVAILABLE = (OSError, ValueError, RuntimeError, ImportError)


def stored_source(
    name: str, read: Callable[[], Mapping[str, Any]] | None = None
) -> dict[str, Any] | None:
    """The stored configuration of a source, inside :func:`architecture_only`.

    Args:
        name: the source as the config names it.
        read: what the builder marks, read from the source itself; called only for a checkpoint
            that stores no configuration for ``name`` (written before the zoo stored them), so
            that it still loads where the source is available.

    Returns:
        The configuration; None outside :func:`architecture_only`.

    Raises:
        MissingSourceError: inside it (a ``KeyError``), when the checkpoint stored no
            configuration for ``name`` and ``read`` is None or cannot read the source (the
            message says what to do).
    """
    stored = _STORED.get()
    if stored is None:
        return None
    if name in stored:
        return stored[name]
    cause: BaseException | None = None
    if read is not None:
        try:
            return dict(read())
        except _UNAVAILABLE as error:
            cause = error
    raise MissingSourceError(
        f"the checkpoint stores no configuration for the pretrained source {name!r} (it has "
        f"{sorted(stored) or 'none'}): it was written before the zoo stored them, and "
        f"{name!r} cannot be read here"
        + (f" ({type(cause).__name__}: {cause})" if cause is not None else "")
        + f". Load it once where {name!r} is available (its folder, the Hugging Face cache or "
        "the network), e.g. with zoo.load(path), and save it again (model.save_pretrained("
        "folder), or a checkpoint of a new fit): it then carries the configuration and loads "
        "anywhere"
    ) from cause


def hf_source(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """What :func:`build_hf_model` needs to rebuild a Hugging Face model without its files.

    Args:
        model: a ``PreTrainedModel`` as loaded from its source.
        **extra: more entries a builder needs (JSON types).

    Returns:
        ``config`` (``PretrainedConfig.to_dict()``), ``dtype`` and ``attn_implementation``
        (as loaded, so that the rebuilt weights have the same dtype), ``generation_config``
        for a model that generates, and ``extra``.
    """
    config = model.config
    entry: dict[str, Any] = {
        "config": config.to_dict(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "attn_implementation": getattr(config, "_attn_implementation", None),
    }
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        entry["generation_config"] = generation.to_dict()
    return entry | extra


def build_hf_model(
    model_class: Any,
    entry: Mapping[str, Any],
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> nn.Module:
    """A Hugging Face model of :func:`hf_source`'s configuration, with random weights.

    Args:
        model_class: an auto class (``AutoModelForCausalLM``) or a model class.
        entry: :func:`hf_source`'s output (only ``config`` is required).
        dtype: the weights' dtype (None: the stored one, else float32).
        attn_implementation: the attention (None: the stored one, else transformers' default).

    Returns:
        The model, its generation config the stored one.
    """
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.for_model(**entry["config"])
    kwargs: dict[str, Any] = {
        "dtype": dtype or getattr(torch, entry.get("dtype") or "float32"),
    }
    attention = attn_implementation or entry.get("attn_implementation")
    if attention:
        kwargs["attn_implementation"] = attention
    # Auto classes have ``from_config``; a model class's own is ``_from_config`` (what the
    # auto classes call), which applies the dtype and attention the same way.
    build = getattr(model_class, "from_config", None) or model_class._from_config
    model = build(config, **kwargs)
    if entry.get("generation_config") and getattr(model, "generation_config", None) is not None:
        model.generation_config = GenerationConfig.from_dict(dict(entry["generation_config"]))
    return model
