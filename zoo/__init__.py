"""A PyTorch Lightning model zoo of remote-sensing vision-language models.

The Python API (:mod:`zoo.api`, :mod:`zoo.pretrained`), imported on first use::

    import zoo

    model, transform, tokenizer = zoo.load("export/")  # a checkpoint, a folder or hf-hub:org/name
    zoo.list_models()
    model = zoo.create_model("flavars")
    zoo.save_pretrained(model, "export/")
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0.dev0"

__all__ = ["create_model", "list_models", "load", "save_pretrained"]

_API = {
    "create_model": "zoo.api",
    "list_models": "zoo.api",
    "load": "zoo.api",
    "save_pretrained": "zoo.pretrained",
}


def __getattr__(name: str) -> Any:
    """The API's functions, imported on first use (``import zoo`` stays light)."""
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
