"""Coordinates of LLaVA-format records: the ``location`` of a conversation batch.

A record may carry where its image is, as ``"location": [lat, lon]`` or as ``"lat"`` and
``"lon"`` fields (the embedded dataset writes the latter, as its COCO images do), in degrees.
:func:`record_locations` reads them for a whole file at once and checks them as FLAVARS' tables
are checked (:func:`~zoo.encoders.location.validate_locations`: finite, latitude in [-90, 90],
longitude in [-180, 180]); the conversation dataset then puts each sample's pair in the batch as
``location`` (``B×2``), what a generator's location token reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from zoo.encoders.location import validate_locations

__all__ = ["batch_locations", "has_coordinates", "record_locations"]

_HOW = (
    "give each record 'location': [lat, lon] or 'lat' and 'lon' fields in degrees, or none of them"
)


def has_coordinates(record: dict[str, Any]) -> bool:
    """Whether a record names a location (``location``, ``lat`` or ``lon``).

    Args:
        record: a LLaVA-format record.

    Returns:
        True when any of the three fields is present and not null.
    """
    return any(record.get(k) is not None for k in ("location", "lat", "lon"))


def _pair(record: dict[str, Any], where: str) -> tuple[float, float]:
    """The record's ``(lat, lon)``; errors name the record and the field."""
    location, lat, lon = record.get("location"), record.get("lat"), record.get("lon")
    if location is not None:
        if lat is not None or lon is not None:
            raise ValueError(f"{where}: has both 'location' and 'lat'/'lon'; keep one of them")
        if not isinstance(location, (list, tuple)) or len(location) != 2:
            raise ValueError(
                f"{where}: 'location' must be a [lat, lon] pair in degrees, got {location!r}"
            )
        lat, lon = location
        names = ("location[0] (lat)", "location[1] (lon)")
    else:
        if lat is None or lon is None:
            missing = "lon" if lon is None else "lat"
            raise ValueError(
                f"{where}: has {'lat' if missing == 'lon' else 'lon'} but no {missing}"
            )
        names = ("lat", "lon")
    values = []
    for name, value in zip(names, (lat, lon), strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: {name} must be a number in degrees, got {value!r}")
        values.append(float(value))
    return values[0], values[1]


def record_locations(records: Sequence[dict[str, Any]], source: str) -> Tensor | None:
    """Each record's ``(lat, lon)``, checked: all records have coordinates, or none has.

    Args:
        records: normalized LLaVA-format records.
        source: names the records' origin in errors (the file).

    Returns:
        float ``N×2`` (lat, lon) in degrees, one row per record; None when no record has
        coordinates.

    Raises:
        ValueError: some records have coordinates and others not (the first without is named),
            a malformed pair, or a value out of range (the record is named).
    """
    if not any(has_coordinates(r) for r in records):
        return None
    pairs = []
    for n, record in enumerate(records):
        where = f"{source}, record {n} (id {record.get('id', '?')!r})"
        if not has_coordinates(record):
            raise ValueError(
                f"{where}: has no coordinates but other records of the file have: {_HOW}"
            )
        pairs.append(_pair(record, where))
    location = torch.tensor(pairs, dtype=torch.float64)
    validate_locations(location, f"location of the records of {source}")
    return location.float()


def batch_locations(samples: Sequence[dict[str, Any]]) -> Tensor | None:
    """The ``location`` of a batch whose samples carry a ``location`` or a ``geo`` centre.

    For the referring loaders, whose samples carry their COCO image's ``geo`` (``lat``,
    ``lon``); a sample's own ``location`` wins. Values are checked
    (:func:`~zoo.encoders.location.validate_locations`).

    Args:
        samples: the batch's samples.

    Returns:
        float ``B×2`` (lat, lon) in degrees, or None when no sample has coordinates.

    Raises:
        ValueError: some samples of the batch have coordinates and others not (the first without
            is named), or a value is out of range.
    """
    pairs: list[tuple[float, float] | None] = []
    for sample in samples:
        if sample.get("location") is not None:
            lat, lon = (float(v) for v in sample["location"])
            pairs.append((lat, lon))
        elif isinstance(sample.get("geo"), dict) and sample["geo"].get("lat") is not None:
            pairs.append((float(sample["geo"]["lat"]), float(sample["geo"]["lon"])))
        else:
            pairs.append(None)
    if all(p is None for p in pairs):
        return None
    if any(p is None for p in pairs):
        i = pairs.index(None)
        raise ValueError(
            f"sample {samples[i].get('id', i)!r} of the batch has no coordinates but others "
            f"have: {_HOW}"
        )
    location = torch.tensor(pairs, dtype=torch.float64)
    validate_locations(location, "location of the batch's samples")
    return location.float()
