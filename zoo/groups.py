"""Config groups: the dataclasses a constructor takes for related arguments (``vision:``,
``stage:``, ``sfi:``, ...), built from an instance, a dict or None in one place.

A checkpoint stores each group as a dict and a Python caller may pass one or leave it out, so
every constructor converts its groups here; a key that is not a field is an error naming the
group, the key and the fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, TypeVar

__all__ = ["as_group"]

T = TypeVar("T")


def as_group(cls: type[T], value: T | Mapping[str, Any] | None, name: str | None = None) -> T:
    """A config group (a dataclass) from itself, its fields as a dict, or None (the defaults).

    Args:
        cls: the group's dataclass.
        value: an instance, its fields as a dict, or None.
        name: the argument's name in the errors (default: the class name).

    Returns:
        The instance.

    Raises:
        ValueError: the dict has a key that is not a field of ``cls``.
        TypeError: ``value`` is neither an instance, a mapping nor None.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        known = [f.name for f in fields(cls)] if is_dataclass(cls) else []
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(
                f"{name or cls.__name__}: unknown keys {unknown}; the keys are {known}"
            )
        return cls(**value)
    raise TypeError(
        f"{name or cls.__name__}: expected a {cls.__name__}, a dict of its fields or None, "
        f"got {type(value).__name__}"
    )
