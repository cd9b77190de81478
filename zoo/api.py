"""The zoo from Python: load a trained model in one line, list and build the named configs.

    import zoo

    model, transform, tokenizer = zoo.load("runs/flavars/flavars-embedded/version_0/checkpoints/last.ckpt")
    model, transform, tokenizer = zoo.load("export/")                # a zoo export folder
    model, transform, tokenizer = zoo.load("hf-hub:org/name")        # from the Hugging Face Hub
    zoo.list_models()                  # ['aquila', 'aquila/ablation_concat', ..., 'geopix/stage2']
    model = zoo.create_model("flavars", embed_dim=64)

No datamodule is needed: a checkpoint or export carries its tokenizer and preprocessing
(:mod:`zoo.model_contents`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from transformers import PreTrainedTokenizerBase

from zoo.model_contents import OlderCheckpointError
from zoo.preprocessing import ImageTransform, Preprocessing
from zoo.pretrained import HUB_PREFIX, config_root, load_source

__all__ = ["HUB_PREFIX", "config_root", "create_model", "list_models", "load"]

log = logging.getLogger(__name__)

#: Folders under ``configs/`` that are not model configs.
_NOT_MODELS = ("data", "eval", "papers", "strategy")


def list_models() -> list[str]:
    """The named model configs: each family's default (``flavars``) and its variants
    (``aquila/stage1``, ``geopix/ablations/no_memory``, ...).

    Returns:
        The names, sorted; each is ``configs/<name>.yaml``.
    """
    root = config_root()
    names = []
    for path in root.rglob("*.yaml"):
        name = path.relative_to(root).with_suffix("").as_posix()
        if name.split("/", 1)[0] not in _NOT_MODELS:
            names.append(name)
    return sorted(names)


def _override_arguments(overrides: Mapping[str, Any], prefix: str) -> list[str]:
    """``{"vision": {"name": "x"}, "embed_dim": 64}`` as ``--prefix.vision.name=x`` ..."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value:
            args += _override_arguments(value, f"{prefix}.{key}")
        else:
            text = value if isinstance(value, str) else yaml.safe_dump(value).strip()
            text = text.removesuffix("\n...").strip()
            args.append(f"--{prefix}.{key}={text}")
    return args


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model of a named config, without the command line.

    The config's data gives the tokenizer and preprocessing as in a fit (the embedded data's
    need no files); the weights are the config's initial ones (random, or the pretrained
    parts it names).

    Args:
        name: a name of :func:`list_models` (or a YAML path).
        **overrides: model arguments, nested groups as dicts
            (``vision={"name": "vit_small_patch16_224"}``).

    Returns:
        The model, with ``preprocessing`` set.

    Raises:
        ValueError: an unknown name (the message lists the names).
    """
    from zoo.main import build_from_configs

    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = config_root() / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(f"no model config {name!r}; the named configs are {list_models()}")
    cli = build_from_configs([path], overrides=_override_arguments(overrides, "model.init_args"))
    return cli.model


def _from_run_config(path: Path, config: str | Path | Sequence[str | Path] | None) -> nn.Module:
    """A checkpoint written before checkpoints were self-contained: rebuilt through the
    run's config (the data it names gives the tokenizer and preprocessing)."""
    from zoo.main import build_from_configs

    if config is None:
        configs = [path.parent.parent / "config.yaml"]
    elif isinstance(config, str | Path):
        configs = [Path(config)]
    else:
        configs = [Path(c) for c in config]
    missing = [c for c in configs if not c.is_file()]
    if missing:
        raise ValueError(
            f"{path} carries no tokenizer or preprocessing (written before zoo checkpoints "
            f"did) and there is no run config at {missing[0]}: pass zoo.load(path, "
            "config=<the run's config.yaml>)"
        )
    log.info("%s: an older checkpoint; rebuilt through %s", path, [str(c) for c in configs])
    return build_from_configs(configs, path).model


def load(
    source: str | Path,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    config: str | Path | Sequence[str | Path] | None = None,
) -> tuple[nn.Module, ImageTransform, PreTrainedTokenizerBase]:
    """A trained model ready for inference, with its image transform and tokenizer.

    Args:
        source: a Lightning checkpoint (``.ckpt``, or a sharded checkpoint folder), a folder
            ``zoo export`` wrote, or ``hf-hub:org/name`` (downloaded when online, else read from
            the local Hugging Face cache; ``hf-hub:org/name@revision`` for a revision).
        device: where to put it (default: CUDA when available, else the CPU).
        dtype: a floating dtype to cast the weights to (default: as stored).
        config: the run's config (or configs, composed in order), for a checkpoint written
            before checkpoints carried their tokenizer (default: the ``config.yaml`` of its
            run folder).

    Returns:
        ``(model, transform, tokenizer)``: the model in eval mode; ``transform`` turns a PIL
        image or ``C×H×W`` array into the normalized tensor the model reads; the tokenizer.

    Raises:
        FileNotFoundError: a path that does not exist, or a Hub repository neither online nor
            cached.
    """
    try:
        model = load_source(source)
    except OlderCheckpointError:
        model = _from_run_config(Path(source), config)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device=device, dtype=dtype).eval() if dtype else model.to(device).eval()
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is None:  # never a silent default: say which statistics are assumed
        preprocessing = Preprocessing(
            image_size=int(getattr(model, "hparams", {}).get("image_size", 224))
        )
        log.warning(
            "%s stores no image preprocessing (its data had none to give): the transform "
            "assumes %s; set model.preprocessing if the training data differed",
            source,
            preprocessing,
        )
    return model, ImageTransform(preprocessing), model.tokenizer
