"""A trained model as a self-contained folder: what ``zoo export`` writes and :func:`zoo.load`
reads, laid out as a Hugging Face Hub model repository.

    model.safetensors          every weight (LoRA merged; tied tensors written once)
    config.json                the model class, its hyper-parameters, the preprocessing, the
                               conversation format, the class names, the pretrained sources'
                               configurations and the zoo version (:mod:`zoo.model_contents`)
    preprocessor_config.json   the image preprocessing in Hugging Face's image-processor keys
    tokenizer.json, ...        the tokenizer's own files (``save_pretrained``)
    config.yaml                the resolved training config, when the zoo CLI trained it
    README.md                  the model card (``zoo export --format hf``)

Each file is written atomically: a folder is never left half-written by an interrupted export.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from zoo.io import atomic_path, atomic_write_text
from zoo.model_contents import (
    CONTENTS_FORMAT,
    ModelContents,
    build_model,
    contents_of,
    load_checkpoint_model,
)
from zoo.preprocessing import Preprocessing

__all__ = [
    "CONFIG_FILE",
    "HUB_PREFIX",
    "config_root",
    "hub_folder",
    "load_source",
    "WEIGHTS_FILE",
    "is_model_folder",
    "load_pretrained",
    "read_folder_contents",
    "save_pretrained",
]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
TRAINING_CONFIG_FILE = "config.yaml"
#: :func:`load_source`'s prefix for a Hugging Face Hub repository.
HUB_PREFIX = "hf-hub:"
#: ``config.json``'s ``library_name``: how the Hub and a reader tell a zoo folder apart.
LIBRARY_NAME = "rs-vlm-zoo"


def _without_lora(hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of the merged model: its stage has no LoRA left to add."""
    stage = hparams.get("stage")
    if isinstance(stage, dict) and stage.get("lora_rank"):
        hparams = hparams | {"stage": stage | {"lora_rank": 0}}
    return hparams


def preprocessor_config(preprocessing: Preprocessing) -> dict[str, Any]:
    """The preprocessing in the keys of Hugging Face's image processors.

    Args:
        preprocessing: the model's preprocessing.

    Returns:
        ``preprocessor_config.json``'s content (resize, rescale by 1/255, normalize; the zoo's
        own fields under ``zoo_preprocessing``).
    """
    size = preprocessing.image_size
    return {
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": 2,  # bilinear, antialiased (as the zoo's loaders)
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocessing.mean),
        "image_std": list(preprocessing.std),
        "do_pad": preprocessing.pad_to_square,
        "zoo_preprocessing": preprocessing.to_dict(),
    }


def save_pretrained(model: nn.Module, folder: str | Path, config: str | None = None) -> Path:
    """Write a self-contained model folder (LoRA adapters merged into the LLM first).

    Args:
        model: a zoo model.
        folder: the folder (created).
        config: the resolved training config (YAML); default the model's ``training_config``.

    Returns:
        The folder.

    Raises:
        ValueError: a model without a tokenizer or preprocessing to store.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config if config is not None else getattr(model, "training_config", None)
    contents = contents_of(model, config)
    if getattr(model, "preprocessing", None) is None:
        raise ValueError(
            f"the {type(model).__name__} has no preprocessing to store: set model.preprocessing "
            "(zoo.preprocessing.Preprocessing; a fit sets it from its data)"
        )
    if hasattr(model, "merge_lora"):
        model.merge_lora()
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp))  # drops tied duplicates (e.g. a tied LM head)
    for name, data in contents.tokenizer_files.items():
        with atomic_path(folder / name) as tmp:
            Path(tmp).write_bytes(data)
    payload = {
        "library_name": LIBRARY_NAME,
        "format": CONTENTS_FORMAT,
        "zoo_version": contents.zoo_version,
        "model_class": contents.model_class,
        "hyper_parameters": _without_lora(_plain(contents.hyper_parameters)),
        "preprocessing": contents.preprocessing.to_dict(),
        "conversation": contents.conversation,
        "class_names": contents.class_names,
        "sources": contents.sources,
        "tokenizer_files": sorted(contents.tokenizer_files),
    }
    atomic_write_text(folder / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")
    atomic_write_text(
        folder / PREPROCESSOR_FILE,
        json.dumps(preprocessor_config(contents.preprocessing), indent=2) + "\n",
    )
    if config:
        atomic_write_text(folder / TRAINING_CONFIG_FILE, config)
    return folder


def _plain(value: Any) -> Any:
    """Hyper-parameters as JSON types (dataclasses as dicts, tuples as lists)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return _plain(asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_root() -> Path:
    """The folder of the zoo's named configs.

    ``ZOO_CONFIGS`` when set, else ``configs/`` of the source tree the package runs from.

    Returns:
        The folder.

    Raises:
        FileNotFoundError: neither exists (the message says how to point at one).
    """
    root = Path(os.environ.get("ZOO_CONFIGS") or Path(__file__).parents[1] / "configs")
    if not root.is_dir():
        raise FileNotFoundError(
            f"the zoo's configs are not at {root}: set ZOO_CONFIGS to the configs/ folder of a "
            "clone of the zoo"
        )
    return root


def is_model_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder :func:`save_pretrained` wrote.

    Args:
        path: a path.

    Returns:
        True for a folder with the zoo's ``config.json`` and ``model.safetensors``.
    """
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_folder_contents(folder: str | Path) -> ModelContents:
    """The contents stored in a model folder.

    Args:
        folder: a folder :func:`save_pretrained` wrote.

    Returns:
        The contents.

    Raises:
        ValueError: a folder that is not a zoo model folder, or misses a file it names.
    """
    folder = Path(folder)
    try:
        payload = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{folder / CONFIG_FILE} is missing or not JSON ({error}): is {folder} a folder "
            "written by zoo export?"
        ) from error
    if payload.get("library_name") != LIBRARY_NAME or "model_class" not in payload:
        raise ValueError(
            f"{folder / CONFIG_FILE} is not a zoo model's config (no library_name "
            f"{LIBRARY_NAME!r}): export the model with zoo export"
        )
    files = {}
    for name in payload.get("tokenizer_files") or []:
        path = folder / name
        if not path.is_file():
            raise ValueError(f"{folder} misses the tokenizer file {name} its config.json names")
        files[name] = path.read_bytes()
    training = folder / TRAINING_CONFIG_FILE
    return ModelContents(
        model_class=payload["model_class"],
        hyper_parameters=dict(payload.get("hyper_parameters") or {}),
        tokenizer_files=files,
        preprocessing=Preprocessing.from_dict(payload["preprocessing"]),
        conversation=payload.get("conversation"),
        class_names=list(payload.get("class_names") or []),
        config=training.read_text() if training.is_file() else None,
        sources=dict(payload.get("sources") or {}),
        zoo_version=str(payload.get("zoo_version", "")),
    )


def hub_folder(repo_id: str, revision: str | None) -> Path:
    """A Hub repository's files: downloaded when online, else from the local cache.

    ``snapshot_download`` itself falls back to the cached snapshot when the Hub cannot be
    reached or ``HF_HUB_OFFLINE`` is set; this turns its errors into one that says what to do.

    Args:
        repo_id: ``org/name``.
        revision: a branch, tag or commit (None: the default branch).

    Returns:
        The local folder of the snapshot.

    Raises:
        FileNotFoundError: neither downloadable nor cached, or no such repository.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision))
    except LocalEntryNotFoundError as error:
        raise FileNotFoundError(
            f"could not download {HUB_PREFIX}{repo_id} and it is not in the local Hugging Face "
            f"cache ({error.__cause__ or error}): connect once (HF_HUB_OFFLINE unset), or give "
            "the folder's path"
        ) from error
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"no repository {repo_id} on the Hub: check the name, or log in (hf auth login, "
            "HF_TOKEN) for a private one"
        ) from error


def load_source(source: str | Path) -> nn.Module:
    """The model of a checkpoint, an export folder or ``hf-hub:org/name[@revision]``.

    Args:
        source: what to load.

    Returns:
        The model in eval mode on the CPU.

    Raises:
        FileNotFoundError: a path that does not exist.
        OlderCheckpointError: a checkpoint written before checkpoints carried their contents.
    """
    text = str(source)
    if text.startswith(HUB_PREFIX):
        repo, _, revision = text.removeprefix(HUB_PREFIX).partition("@")
        return load_pretrained(hub_folder(repo, revision or None))
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: give a checkpoint (.ckpt), a zoo export folder or "
            f"{HUB_PREFIX}org/name"
        )
    if is_model_folder(path):
        return load_pretrained(path)
    return load_checkpoint_model(path)


def load_pretrained(folder: str | Path, **overrides: Any) -> nn.Module:
    """The model of a folder :func:`save_pretrained` wrote, in eval mode on the CPU.

    Args:
        folder: the folder.
        **overrides: constructor arguments that replace the stored ones.

    Returns:
        The model, its weights loaded and ``preprocessing`` set.
    """
    folder = Path(folder)
    model = build_model(read_folder_contents(folder), **overrides)
    load_model(model, str(folder / WEIGHTS_FILE))
    return model.eval()
