"""Files in and out, in one place: atomic writes and checkpoint / state-dict reading.

Every file the zoo writes goes through :func:`atomic_write` (a temporary file beside the
target, renamed over it only when complete), so an interrupted run never leaves a
half-written file under the real name. Every weight file it reads goes through
:func:`load_checkpoint` (``weights_only=True`` by default, clear errors for a missing,
truncated or foreign file) or :func:`read_state_dict` (tensors only).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor

__all__ = [
    "ProcessorSettings",
    "atomic_dir",
    "atomic_path",
    "atomic_write",
    "atomic_write_text",
    "load_checkpoint",
    "read_json",
    "read_processor_settings",
    "resolve_model_folder",
    "read_yaml",
    "require_dir",
    "read_state_dict",
]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file path beside ``path`` for a writer that takes a file name (e.g.
    ``safetensors.torch.save_model``); on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    ``mode`` is ``"w"`` (text) or ``"wb"`` (bytes).
    """
    with atomic_path(path) as tmp, tmp.open(mode, encoding=None if "b" in mode else encoding) as f:
        yield f


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` that becomes ``path`` when the block succeeds.

    Fails (and removes the temporary folder) if ``path`` appeared meanwhile; on an exception
    nothing is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's folder is private; give it mkdir's mode
        yield tmp
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _parse(path: str | Path, what: str, kind: str, loads: Any, errors: type[Exception]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return loads(path.read_text(encoding="utf-8"))
    except errors as error:
        raise ValueError(f"{path} is not valid {kind}: {error}") from error


def require_dir(path: str | Path, how: str, what: str = "dataset root") -> Path:
    """``path`` as a Path if it is a folder, else an error that names it and says ``how`` to
    get the data."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist. {how}")
    return path


def read_json(path: str | Path, what: str = "file") -> Any:
    """Parse a JSON file; the errors name it (``what`` says what it is: "COCO instances file")."""
    return _parse(path, what, "JSON", json.loads, json.JSONDecodeError)


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """Parse a YAML file (safely: plain data only); the errors name it."""
    import yaml

    return _parse(path, what, "YAML", yaml.safe_load, yaml.YAMLError)


def load_checkpoint(path: str | Path, what: str = "checkpoint", weights_only: bool = True) -> Any:
    """Load a ``torch.save`` file on the CPU, with errors that name the file and the fix.

    Args:
        path: the file.
        what: how the error messages name it (``"stage.init_checkpoint"``, ``"--ckpt_path"``).
        weights_only: passed to :func:`torch.load`; only set ``False`` for a file you trust
            (unpickling arbitrary objects can run code).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: the file is truncated, not a torch file, or pickles objects that
            ``weights_only=True`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise RuntimeError(
            f"could not load {what} {path} with weights_only=True: it pickles objects other "
            "than tensors and plain containers. Export the weights as safetensors "
            "(zoo export) or re-save only its 'state_dict'. Original error: "
            f"{str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise RuntimeError(
            f"could not read {what} {path}: it is truncated or not a PyTorch checkpoint "
            f"({str(error).splitlines()[0]})"
        ) from error


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, Tensor]:
    """The tensors of a Lightning ``.ckpt`` (its ``state_dict``), a plain state-dict file or
    a ``.safetensors`` file, loaded on the CPU."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
        from safetensors.torch import load_file

        return load_file(str(path))
    data = load_checkpoint(path, what)
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        keys = list(data)[:10] if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(
            f"{what} {path} holds neither a Lightning checkpoint ('state_dict') nor a state "
            f"dict of tensors; found {keys}"
        )
    return dict(data)


@dataclass(frozen=True)
class ProcessorSettings:
    """What a Hugging Face model folder says the data must do: its tokenizer (the folder itself),
    the image size and the per-band mean / std of [0, 1] pixels of its image processor."""

    tokenizer: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def resolve_model_folder(name: str | Path, what: str = "model") -> Path:
    """A local folder holding a Hugging Face model: ``name`` itself when it is one, else the
    Hugging Face cache's copy of the hub id ``name`` (read offline, never downloaded here).

    Raises:
        FileNotFoundError: neither exists; the message says how to download it.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{what} {str(name)!r}: {path} holds no config.json (not a Hugging Face model folder)")
        return path
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(str(name), local_files_only=True))
    except Exception as error:  # not an id, or not in the cache: one message for both
        raise FileNotFoundError(
            f"{what} {str(name)!r} is neither a local folder nor in the Hugging Face cache. Download "
            f"it where the hub is reachable (`huggingface-cli download {name} --local-dir <folder>`) "
            f"and give the folder ({type(error).__name__})"
        ) from error
    return cached


def read_processor_settings(folder: str | Path, what: str = "processor") -> ProcessorSettings:
    """Read the tokenizer and image-processor settings of a model folder (e.g. FLAVA's).

    The image size is the processor's crop size (else its ``size``, else the config's
    ``image_config.image_size``); a folder without ``preprocessor_config.json`` is refused, since
    its weights were trained with settings it does not state.
    """
    path = resolve_model_folder(folder, what)
    processor = path / "preprocessor_config.json"
    if not processor.is_file():
        raise FileNotFoundError(
            f"{what} {str(folder)!r}: no preprocessor_config.json in {path}; give a folder saved "
            "with its processor (e.g. FlavaProcessor.save_pretrained), so the data prepares images "
            "as the model was trained"
        )
    settings = read_json(processor, f"{what} preprocessor_config.json")
    size: Any = settings.get("crop_size") or settings.get("size")
    if isinstance(size, Mapping):
        size = size.get("height", size.get("shortest_edge"))
    if size is None and (path / "config.json").is_file():
        size = (read_json(path / "config.json", f"{what} config.json").get("image_config") or {}).get("image_size")
    if size is None or "image_mean" not in settings or "image_std" not in settings:
        raise ValueError(f"{processor} states no image size, image_mean or image_std")
    return ProcessorSettings(
        tokenizer=str(path), image_size=int(size),
        mean=tuple(float(v) for v in settings["image_mean"]),
        std=tuple(float(v) for v in settings["image_std"]),
    )
