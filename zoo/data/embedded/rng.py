"""Draws from a :class:`numpy.random.Generator` that return plain Python values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["between", "pick", "pick_weighted"]


def pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """A uniformly drawn element (plain Python type, unlike ``rng.choice``).

    Args:
        rng: the random state.
        items: the candidates.

    Returns:
        One of ``items``.
    """
    return items[int(rng.integers(len(items)))]


def pick_weighted(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    """A name drawn with the given relative weights.

    Args:
        rng: the random state.
        options: ``(name, weight)`` pairs.

    Returns:
        One of the names.
    """
    x = float(rng.random()) * sum(w for _, w in options)
    for name, weight in options:
        x -= weight
        if x < 0.0:
            return name
    return options[-1][0]


def between(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in ``[low, high]``.

    Args:
        rng: the random state.
        low: the smallest value.
        high: the largest value (included).

    Returns:
        The drawn integer.
    """
    return int(rng.integers(low, high + 1))
