"""The top level: one sample per ``(seed, split, index)`` and the whole dataset on disk."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from zoo.data.embedded.language import SceneTexts, describe_scene, location_questions
from zoo.data.embedded.painters import paint
from zoo.data.embedded.scene_graph import OBJECT_CATEGORIES, SCENE_CLASSES, SceneGraph
from zoo.data.embedded.spectra import MULTISPECTRAL_BANDS, extra_bands
from zoo.data.embedded.writers import (
    CaptionTable,
    CocoRefs,
    Conversations,
    write_geotiff,
    write_image,
    write_json,
)
from zoo.io import atomic_dir

__all__ = [
    "DATASET_VERSION",
    "NAME",
    "SPLITS",
    "Sample",
    "generate",
    "is_complete",
    "make_sample",
    "write_embedded_dataset",
]

log = logging.getLogger(__name__)

DATASET_VERSION = 3
"""Bumped whenever the generated content changes; part of :func:`is_complete`'s check."""

NAME = "zoo-embedded"
SPLITS: tuple[str, ...] = ("train", "val", "test")

_SPLIT_IDS = {split: i for i, split in enumerate(SPLITS)}
_TAG_IMAGE, _TAG_LABEL, _TAG_BANDS = 1, 2, 3  # first entropy word: separates the seed streams
_TAG_LOCATION = 4  # the location questions' own stream: the other draws stay as they were


@dataclass
class Sample:
    """One image, its scene graph and its texts.

    Attributes:
        pixels: the image, ``S×S×3`` uint8.
        graph: the scene's class, location and visible objects.
        texts: the scene's caption, description, questions and referring expressions.
    """

    pixels: np.ndarray
    graph: SceneGraph
    texts: SceneTexts


@lru_cache(maxsize=64)
def _block_labels(seed: int, split_id: int, block: int) -> tuple[int, ...]:
    """A random permutation of the classes: each block of ``len(SCENE_CLASSES)`` is balanced."""
    rng = np.random.default_rng([_TAG_LABEL, seed, split_id, block])
    return tuple(int(v) for v in rng.permutation(len(SCENE_CLASSES)))


def make_sample(seed: int, split: str, index: int, image_size: int) -> Sample:
    """Paint one image and write its texts.

    Depends only on (seed, split, index, image_size).

    Args:
        seed: the dataset's seed.
        split: ``train``, ``val`` or ``test``.
        index: the image's index in its split.
        image_size: the image's side, in pixels.

    Returns:
        The sample.
    """
    split_id = _SPLIT_IDS[split]
    n = len(SCENE_CLASSES)
    scene = SCENE_CLASSES[_block_labels(seed, split_id, index // n)[index % n]]
    rng = np.random.default_rng([_TAG_IMAGE, seed, split_id, index])
    pixels, graph = paint(rng, scene, image_size)
    texts = describe_scene(rng, graph)
    texts.location_qa = location_questions(
        np.random.default_rng([_TAG_LOCATION, seed, split_id, index]), graph
    )
    return Sample(pixels, graph, texts)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _validate(num_train: int, num_val: int, num_test: int, image_size: int, seed: int) -> None:
    _check_int("num_train", num_train, 1)
    _check_int("num_val", num_val, 0)
    _check_int("num_test", num_test, 0)
    _check_int("image_size", image_size, 32)
    _check_int("seed", seed, 0)


def _metadata(
    sizes: dict[str, int], image_size: int, seed: int, multispectral: bool = False
) -> dict[str, Any]:
    extra = {"bands": list(MULTISPECTRAL_BANDS)} if multispectral else {}
    return extra | {
        "name": NAME,
        "version": DATASET_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "splits": {split: int(sizes[split]) for split in SPLITS},
        "scene_classes": list(SCENE_CLASSES),
        "object_categories": list(OBJECT_CATEGORIES),
    }


def _write_split(
    directory: Path,
    split: str,
    count: int,
    image_size: int,
    seed: int,
    bar: tqdm,
    multispectral: bool = False,
) -> None:
    """Write the images (PNG; multispectral: 5-band GeoTIFFs) and all annotation files of one
    split."""
    image_dir = directory / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    table, conversations, coco = CaptionTable(), Conversations(), CocoRefs(split)
    for index in range(count):
        sample = make_sample(seed, split, index, image_size)
        name = f"{split}_{index:05d}"
        if multispectral:  # the visible bands as always, NIR and SWIR from their own stream
            rel = f"images/{split}/{name}.tif"
            rng = np.random.default_rng([_TAG_BANDS, seed, _SPLIT_IDS[split], index])
            bands = np.concatenate([sample.pixels, extra_bands(sample.pixels, rng)], -1)
            graph = sample.graph
            write_geotiff(
                directory / rel, bands, MULTISPECTRAL_BANDS, graph.lat, graph.lon, graph.gsd_m
            )
        else:
            rel = f"images/{split}/{name}.png"
            write_image(directory / rel, sample.pixels)
        table.add(rel, sample.graph, sample.texts.caption)
        conversations.add(name, rel, sample.texts, (sample.graph.lat, sample.graph.lon))
        coco.add(rel, sample.graph, sample.texts.refs)
        bar.update(1)
    table.write(directory / f"{split}.csv")
    conversations.write(directory / f"conversations_{split}.json")
    coco.write(directory / f"instances_{split}.json", directory / f"refs_{split}.json")


def _disk_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def is_complete(
    root: str | Path,
    num_train: int = 2000,
    num_val: int = 250,
    num_test: int = 250,
    image_size: int = 64,
    seed: int = 0,
    multispectral: bool = False,
) -> bool:
    """Whether ``root`` holds a complete dataset with these parameters.

    Args:
        root: the dataset folder.
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        image_size: the images' side, in pixels.
        seed: the generator seed.
        multispectral: the multispectral variant (5-band GeoTIFFs).

    Returns:
        True when ``root/metadata.json`` exists and matches these parameters and the version.
    """
    path = Path(root) / "metadata.json"
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    return found == _metadata(sizes, image_size, seed, multispectral)


def write_embedded_dataset(
    root: str | Path,
    num_train: int = 2000,
    num_val: int = 250,
    num_test: int = 250,
    image_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    multispectral: bool = False,
) -> Path:
    """Write the dataset under ``root``; deterministic for (seed, sizes, image_size).

    The files are written into a temporary sibling folder (:func:`zoo.io.atomic_dir`) that
    becomes ``root`` at the end, so ``root`` never holds a half-written dataset. A complete
    dataset with the same parameters at ``root`` is kept as is; anything else there is an
    error.

    Args:
        root: the dataset folder.
        num_train: training images (at least 1).
        num_val: validation images.
        num_test: test images.
        image_size: the images' side, in pixels (at least 32).
        seed: the generator seed (at least 0).
        progress: show a progress bar.
        multispectral: write each image as a 5-band GeoTIFF (R, G, B as the PNG, NIR, SWIR:
            :mod:`.spectra`) in EPSG:4326 around its location, the tables naming the ``.tif``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: a size or the seed is not an integer in its range.
        FileExistsError: ``root`` exists and holds something else than this dataset.
    """
    _validate(num_train, num_val, num_test, image_size, seed)
    root = Path(root)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    if is_complete(root, num_train, num_val, num_test, image_size, seed, multispectral):
        log.info("embedded dataset already complete at %s", root)
        return root
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder made beforehand is fine
    elif root.exists():
        if (root / "metadata.json").is_file():
            reason = (
                "holds an embedded dataset generated with other parameters or another "
                f"generator version (wanted {_metadata(sizes, image_size, seed, multispectral)})"
            )
        else:
            reason = "exists but holds no complete embedded dataset (no metadata.json)"
        raise FileExistsError(
            f"{root} {reason}. Delete it (or choose another root) and call generate() again."
        )
    try:
        with atomic_dir(root) as tmp:
            (tmp / "images").mkdir()
            total = sum(sizes.values())
            with tqdm(total=total, desc=NAME, unit="img", disable=not progress) as bar:
                for split in SPLITS:
                    _write_split(tmp, split, sizes[split], image_size, seed, bar, multispectral)
            metadata = _metadata(sizes, image_size, seed, multispectral)
            write_json(tmp / "metadata.json", metadata)  # last
    except OSError:
        # another process may have finished the same dataset first
        if not is_complete(root, num_train, num_val, num_test, image_size, seed, multispectral):
            raise
        log.info("embedded dataset completed meanwhile by another process at %s", root)
        return root
    log.info(
        "wrote %s dataset to %s: %d images, %.1f MB",
        NAME, root, sum(sizes.values()), _disk_size(root) / 1e6,
    )  # fmt: skip
    return root


generate = write_embedded_dataset
"""The name the datamodules use for :func:`write_embedded_dataset`."""
