"""Per-band normalization statistics, computed once over a dataset and stored beside it.

``zoo stats --config <config>`` (:mod:`zoo.stats`) reads the training split of a config's data
with its band choice (every reader of the zoo, :mod:`zoo.data.bands`), sums each band's values
and squares over every pixel of every image (float64, so a large dataset loses no precision)
and writes :data:`STATS_FILE` beside the data (the data's root; the embedded dataset's own copy).
A datamodule then uses it (:func:`resolve_statistics`) when its ``mean`` / ``std`` are not
given, and says so in a log line; the model keeps the statistics in its checkpoint through the
data's ``preprocessing``.

The values follow the zoo's convention for ``mean`` / ``std``: pixel values divided by 255 (the
loaders give [0, 255] for 8-bit files, raw values for uint16 reflectance and floats; the
normalization is ``(x - 255·mean) / (255·std)`` either way), so an 8-bit RGB dataset's
statistics compare with ImageNet's directly.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD
from zoo.io import atomic_write_text

__all__ = [
    "STATS_FILE",
    "band_statistics",
    "has_statistics",
    "resolve_statistics",
    "write_statistics",
]

log = logging.getLogger(__name__)

#: The statistics file's name, in the data's root.
STATS_FILE = "band_stats.json"


def _images(sample: dict[str, Any]) -> torch.Tensor:
    return sample["image"]


def band_statistics(
    dataset: Dataset, num_workers: int = 0, progress: bool = True
) -> dict[str, Any]:
    """Each band's mean and standard deviation over every pixel of every image of a dataset.

    Args:
        dataset: a dataset whose samples carry ``image`` (float ``C×H×W``).
        num_workers: data-loading processes.
        progress: show a tqdm progress bar.

    Returns:
        ``mean`` and ``std`` per band (pixel values / 255), ``images`` and ``pixels`` counted.

    Raises:
        ValueError: the dataset is empty, or its images differ in band count.
    """
    if len(dataset) == 0:
        raise ValueError(f"{type(dataset).__name__} is empty: no statistics to compute")
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_images)
    total = sq = None
    pixels = 0
    for image in tqdm(loader, total=len(dataset), desc="band statistics", disable=not progress):
        values = image.reshape(image.shape[0], -1).double()
        if total is None:
            total = torch.zeros(len(values), dtype=torch.float64)
            sq = torch.zeros(len(values), dtype=torch.float64)
        if len(values) != len(total):
            raise ValueError(
                f"{type(dataset).__name__}: an image has {len(values)} bands, the first had "
                f"{len(total)}: every image must give the same bands"
            )
        total += values.sum(1)
        sq += values.square().sum(1)
        pixels += values.shape[1]
    mean = total / pixels
    std = (sq / pixels - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant band: unit scale
    return {
        "mean": (mean / 255.0).tolist(),
        "std": (std / 255.0).tolist(),
        "images": len(dataset),
        "pixels": pixels,
    }


def _stored(datamodule: Any) -> dict[str, Any] | None:
    """The data's stored statistics when they are of its bands, else None."""
    path = Path(datamodule.dataset_root) / STATS_FILE
    if not path.is_file():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    choice = datamodule.band_choice
    wanted = None if choice.bands is None else list(choice.bands)
    if stored.get("bands") == wanted and len(stored.get("mean", ())) == choice.channels:
        return stored
    return None


def has_statistics(datamodule: Any) -> bool:
    """Whether the data's :data:`STATS_FILE` holds statistics of its bands.

    Args:
        datamodule: a zoo datamodule (``dataset_root``, ``band_choice``).

    Returns:
        True when they are stored.
    """
    return _stored(datamodule) is not None


def write_statistics(datamodule: Any, num_workers: int = 0, progress: bool = True) -> Path:
    """Compute a datamodule's per-band statistics over its training split and store them
    (its data must be on disk: ``prepare_data`` first for the embedded dataset).

    Args:
        datamodule: a zoo datamodule (``_dataset``, ``banded``, ``dataset_root``,
            ``band_choice``).
        num_workers: data-loading processes.
        progress: show a tqdm progress bar.

    Returns:
        The written :data:`STATS_FILE`.
    """
    dataset = datamodule.banded(datamodule._dataset("train"))
    stats = band_statistics(dataset, num_workers, progress)
    choice = datamodule.band_choice
    record = {
        "bands": None if choice.bands is None else list(choice.bands),
        "band_names": None if datamodule.band_names is None else list(datamodule.band_names),
        "channels": len(stats["mean"]),
        **stats,
        "split": "train",
        "image_size": getattr(datamodule, "image_size", None),
        "units": "pixel value / 255 (the zoo's mean / std convention)",
    }
    path = Path(datamodule.dataset_root) / STATS_FILE
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def resolve_statistics(datamodule: Any) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """The per-band mean / std a datamodule normalizes with, and where they come from.

    In this order: ``mean`` / ``std`` given in the config (or by a LLaVA / FLAVA folder); a
    :data:`STATS_FILE` beside the data computed for the same bands; ImageNet's for three bands
    (with a warning when bands were chosen, e.g. Sentinel-2's [4, 3, 2]). Anything else is an
    error: a model never normalizes N bands with a silent default.

    Args:
        datamodule: a zoo datamodule (``mean``, ``std``, ``band_choice``, ``dataset_root``).

    Returns:
        ``(mean, std, source)``.

    Raises:
        ValueError: the given statistics do not have one value per band, or no statistics for
            a band count other than three.
    """
    choice = datamodule.band_choice
    channels = choice.channels
    names = list(datamodule.band_names or ("R", "G", "B"))
    mean, std = tuple(datamodule.mean), tuple(datamodule.std)
    if datamodule._statistics_given:
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"data.init_args.mean has {len(mean)} and std {len(std)} values but the data "
                f"reads {channels} bands {names}: give one value per band, or leave both unset "
                f"and run `zoo stats --config <your config>`"
            )
        return mean, std, "data.init_args.mean / std"
    path = Path(datamodule.dataset_root) / STATS_FILE
    stored = _stored(datamodule)
    if stored is not None:
        log.info("per-band statistics of bands %s from %s", names, path)
        return tuple(stored["mean"]), tuple(stored["std"]), str(path)
    if path.is_file():
        log.warning(
            "%s holds statistics of other bands than the data's %s: not used (run `zoo stats` "
            "again for these bands)",
            path,
            names,
        )
    if channels == 3 and (mean, std) == (IMAGENET_MEAN, IMAGENET_STD):
        if not choice.is_default:
            log.warning(
                "bands %s are normalized with ImageNet's statistics (no %s beside the data): run "
                "`zoo stats --config <your config>` for the data's own, e.g. for reflectance",
                names,
                path,
            )
        return mean, std, "ImageNet's (the default)"
    raise ValueError(
        f"the data reads {channels} bands {names} but has no per-band statistics: run `zoo "
        f"stats --config <your config>` (it writes {path}), or set data.init_args.mean and std "
        "(one value per band, pixel value / 255)"
    )
