"""The Hugging Face Hub: a zoo model's card and its upload (filled in by issue 23's hub part)."""

from __future__ import annotations

from typing import Any

__all__ = ["push_to_hub"]


def push_to_hub(model: Any, repo_id: str, **kwargs: Any) -> str:
    """Upload a model folder with its card to the Hub.

    Args:
        model: a zoo model.
        repo_id: ``org/name``.
        **kwargs: upload options.

    Returns:
        The commit URL.

    Raises:
        NotImplementedError: not written yet.
    """
    raise NotImplementedError("push_to_hub is being written")
