"""Checkpoints of an earlier zoo version, kept as their *layout*: the whole checkpoint as that
version's ``zoo fit`` wrote it (hyper-parameters, loop and callback states, optimizer and
scheduler states, every state-dict key with its shape and dtype), with each large tensor
replaced by a description of it.

What a later version must keep reading is that layout (the keys, the shapes and the
hyper-parameters), not the values of random weights: 80 MB of float noise in the repository
would prove nothing more. :func:`materialize` writes the layout back as a Lightning checkpoint
whose tensors are seeded random numbers of the recorded shapes (integer tensors, random generator
states, and scalars such as step counters are kept verbatim).

``python -m tests.checkpoint_layouts CKPT OUT.json`` records one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

_TENSOR = "__tensor__"
_SAME = "__same_as__"


def describe(value: Any, seen: dict[tuple, int] | None = None) -> Any:
    """``value`` (a loaded checkpoint or part of one) with its large tensors described.

    A tensor that shares its memory with an earlier one (tied weights: an LLM's input
    embeddings and output head) is recorded as the same tensor, as ``torch.save`` keeps it.
    """
    seen = {} if seen is None else seen
    if isinstance(value, torch.Tensor):
        identity = (value.untyped_storage().data_ptr(), value.storage_offset(), value.shape)
        if value.numel() and identity in seen:
            return {_SAME: seen[identity]}
        seen[identity] = len(seen)
        entry = {
            _TENSOR: list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
            "id": seen[identity],
        }
        if value.dim() == 0 or not value.is_floating_point():  # RNG states, step counters
            entry["values"] = value.flatten().tolist()
        return entry
    if isinstance(value, dict):
        return {"__dict__": [[describe(k, seen), describe(v, seen)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [describe(v, seen) for v in value]}
    if isinstance(value, list):
        return [describe(v, seen) for v in value]
    return value


def _build(value: Any, generator: torch.Generator, made: dict[int, torch.Tensor]) -> Any:
    if isinstance(value, dict) and _SAME in value:
        return made[value[_SAME]]
    if isinstance(value, dict) and _TENSOR in value:
        made[value["id"]] = _tensor(value, generator)
        return made[value["id"]]
    if isinstance(value, dict) and "__dict__" in value:
        return {
            _build(k, generator, made): _build(v, generator, made) for k, v in value["__dict__"]
        }
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_build(v, generator, made) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_build(v, generator, made) for v in value]
    return value


def _tensor(value: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    dtype = getattr(torch, value["dtype"])
    shape = value[_TENSOR]
    if "values" in value:
        return torch.tensor(value["values"], dtype=dtype).reshape(shape)
    if dtype.is_floating_point:  # non-negative: Adam's second moments must stay valid
        return (torch.rand(shape, generator=generator) * 0.04).to(dtype)
    return torch.randint(0, 2, shape, generator=generator).to(dtype)


def materialize(layout: str | Path, output: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write the checkpoint recorded in ``layout`` to ``output``; returns it."""
    generator = torch.Generator().manual_seed(seed)
    checkpoint = _build(json.loads(Path(layout).read_text()), generator, {})
    torch.save(checkpoint, output)
    return checkpoint


if __name__ == "__main__":
    source, target = sys.argv[1:3]
    loaded = torch.load(source, map_location="cpu", weights_only=False)
    Path(target).write_text(json.dumps(describe(loaded)))
