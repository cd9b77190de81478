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
import re
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
    "read_tensors",
    "remove_stale_temporaries",
]


_TEMPORARY = re.compile(r"\..+\.pid(\d+)\.[^.]+\.tmp")


def _temporary_prefix(path: Path) -> str:
    """``.<name>.pid<pid>.``: the writer's process id lets a later run tell a temporary file
    that a killed writer left from one being written now."""
    return f".{path.name}.pid{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files and folders of :func:`atomic_path` / :func:`atomic_dir` in
    ``folder`` whose writer is no longer running (a SIGKILL cannot be caught, so its
    temporary file is swept by the next run); returns what was removed."""
    folder = Path(folder)
    removed = []
    for path in folder.iterdir() if folder.is_dir() else ():
        match = _TEMPORARY.fullmatch(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file path beside ``path`` for a writer that takes a file name (e.g.
    ``safetensors.torch.save_model``); on success it replaces ``path`` atomically.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask), so
    a colleague reads what the zoo writes wherever the umask lets them.

    On an exception the temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp's file is private (0600), and some writers (safetensors) recreate it so:
        # give it open()'s mode once written.
        tmp.chmod(0o666 & ~_umask())
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
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent))
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


def load_checkpoint(
    path: str | Path, what: str = "checkpoint", weights_only: bool = True, mmap: bool = False
) -> Any:
    """Load a ``torch.save`` file on the CPU, with errors that name the file and the fix.

    Args:
        path: the file.
        what: how the error messages name it (``"stage.init_checkpoint"``, ``"--ckpt_path"``).
        weights_only: passed to :func:`torch.load`; only set ``False`` for a file you trust
            (unpickling arbitrary objects can run code).
        mmap: map the tensors' storage from the file instead of reading it (cheap checks).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: the file is truncated, not a torch file, or pickles objects that
            ``weights_only=True`` refuses.
    """
    path = Path(path)
    if path.is_dir():
        return read_sharded_checkpoint(path, what, weights_only)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)
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


#: What Lightning names the model's weights inside a sharded checkpoint folder
#: (``ModelParallelStrategy``: ``state_dict``; ``FSDPStrategy``: ``model``).
_SHARDED_MODEL_KEYS = ("state_dict", "model")


def read_sharded_checkpoint(
    path: str | Path, what: str = "checkpoint", weights_only: bool = True
) -> dict[str, Any]:
    """A Lightning sharded checkpoint folder (``torch.distributed.checkpoint`` shards and
    ``meta.pt``, as FSDP writes it) as one checkpoint dict on the CPU: ``meta.pt``'s entries
    (epoch, hyper-parameters ...) and the consolidated ``state_dict``. Only the model's tensors
    are read (not the optimizer's), and no process group is needed."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = Path(path)
    meta = path / "meta.pt"
    if not meta.is_file():
        raise FileNotFoundError(
            f"{what} {path} is a folder but not a sharded checkpoint (no meta.pt): give a "
            "checkpoint file or the folder Lightning wrote for one"
        )
    checkpoint = load_checkpoint(meta, what, weights_only)
    metadata = dcp.FileSystemReader(str(path)).read_metadata()
    mapping = metadata.planner_data or {}
    tensors: dict[str, dict[str, Tensor]] = {}
    for key, info in metadata.state_dict_metadata.items():
        top, *rest = mapping.get(key, tuple(key.split(".", 1)))
        if top in _SHARDED_MODEL_KEYS and rest and isinstance(info, TensorStorageMetadata):
            name = ".".join(str(part) for part in rest)
            tensors.setdefault(top, {})[name] = torch.empty(info.size, dtype=info.properties.dtype)
    if len(tensors) != 1:
        raise ValueError(
            f"{what} {path} holds {'no' if not tensors else 'several'} model state dicts "
            f"(looked for {' or '.join(_SHARDED_MODEL_KEYS)}): is it a Lightning FSDP checkpoint?"
        )
    dcp.load(tensors, checkpoint_id=str(path), no_dist=True)
    checkpoint["state_dict"] = next(iter(tensors.values()))
    return checkpoint


def read_state_dict(path: str | Path, what: str = "checkpoint") -> dict[str, Tensor]:
    """The tensors of a Lightning ``.ckpt`` (its ``state_dict``; a sharded checkpoint folder
    consolidated, see :func:`read_sharded_checkpoint`), a plain state-dict file or a
    ``.safetensors`` file, loaded on the CPU."""
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


#: Weight files of a Hugging Face folder, in the order transformers looks for them.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_tensors(folder: str | Path, prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """The tensors whose names start with one of ``prefixes`` in a Hugging Face weight folder
    (one ``model.safetensors`` / ``pytorch_model.bin`` file, or shards with their
    ``*.index.json``); only the shards that hold them are read."""
    folder = Path(folder)
    for name in _WEIGHT_FILES:
        index = folder / f"{name}.index.json"
        if index.is_file():
            weight_map = read_json(index, "weight index")["weight_map"]
            files = sorted({f for k, f in weight_map.items() if k.startswith(prefixes)})
            break
        if (folder / name).is_file():
            files = [name]
            break
    else:
        raise FileNotFoundError(
            f"{folder} holds no weights ({' or '.join(_WEIGHT_FILES)}, or their shards with an index)"
        )
    out: dict[str, Tensor] = {}
    for file in files:
        path = folder / file
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                out |= {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefixes)}
        else:
            state = read_state_dict(path, "weight shard")
            out |= {k: v for k, v in state.items() if k.startswith(prefixes)}
    return out


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
            raise FileNotFoundError(
                f"{what} {str(name)!r}: {path} holds no config.json (not a Hugging Face model folder)"
            )
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
        size = (
            read_json(path / "config.json", f"{what} config.json").get("image_config") or {}
        ).get("image_size")
    if size is None or "image_mean" not in settings or "image_std" not in settings:
        raise ValueError(f"{processor} states no image size, image_mean or image_std")
    return ProcessorSettings(
        tokenizer=str(path),
        image_size=int(size),
        mean=tuple(float(v) for v in settings["image_mean"]),
        std=tuple(float(v) for v in settings["image_std"]),
    )
