"""A folder of the user's own images (GeoTIFF, PNG, JPEG) for ``predict`` and ``zoo embed``.

Every file under ``root`` (recursively) is read with :mod:`zoo.data.rasters`: chosen bands,
a percentile stretch of reflectance, nodata; a file larger than ``chip_size`` is cut into
overlapping chips, each resized to the model's ``image_size``. Each chip is a windowed read of
its file (a tiled or Cloud-Optimized GeoTIFF is read block by block), so memory is set by the
batch of chips, never by the file; a file's stretch limits (:func:`~zoo.data.rasters.stretch_limits`)
are computed once, on its first chip. A sample carries, besides the ``image``:

* ``path`` (the file, relative to ``root``) and ``chip``: ``{"index", "count", "window":
  [row, col, height, width] in source pixels, "height", "width" (the file's), "valid_fraction"}``;
* ``geo`` (None for a file without CRS): ``{"crs": WKT, "transform": the six affine
  coefficients of the *model-input* pixel grid, "lat", "lon" (the chip centre), "footprint":
  the chip outline as a GeoJSON Polygon in EPSG:4326}``;
* ``location`` (lat, lon) for FLAVARS, batched only when every sample of the batch has one;
* the prompt: ``caption`` (task ``image_text``) or a one-question ``conversations``
  (tasks ``conversation`` and ``referring``), from ``prompt`` or a per-image CSV.

There are no labels: ``fit``, ``validate`` and ``test`` are errors that say so.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import rasterio
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from zoo.allocator import fixed_mmap_threshold
from zoo.data import embedded
from zoo.data.bands import BandChoice
from zoo.data.coco_refs import embedded_referring_vocabulary
from zoo.data.conversations import IMAGE_TOKEN, ConversationCollate
from zoo.data.datamodules import TextCollate, ZooDataModule, embedded_vocabulary
from zoo.data.rasters import (
    RASTER_EXTENSIONS,
    Raster,
    Window,
    centre_lat_lon,
    chip_windows,
    footprint,
    read_raster,
    stretch_limits,
    window_transform,
)
from zoo.data.referring import ReferringCollate, add_seg_tokens
from zoo.data.tokenize import build_tokenizer

__all__ = ["DEFAULT_PROMPTS", "ImageFolderCollate", "ImageFolderDataModule", "ImageFolderDataset"]

log = logging.getLogger(__name__)

Task = Literal["image_text", "conversation", "referring"]

#: The prompt of each task when neither ``prompt`` nor the CSV gives one.
DEFAULT_PROMPTS: dict[str, str] = {
    "image_text": "a satellite image",
    "conversation": "Describe the image briefly.",
    "referring": "Please segment the building.",
}

#: Sample keys that are per-sample Python values, batched as lists.
_LIST_KEYS = ("path", "chip", "geo")


def find_images(root: Path) -> list[Path]:
    """The image files under ``root`` (recursively, sorted), by :data:`RASTER_EXTENSIONS`.

    Args:
        root: the image folder.

    Returns:
        The image files.

    Raises:
        FileNotFoundError: the folder does not exist or holds no image file.
    """
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist: set data.init_args.root to a folder of "
            f"{', '.join(RASTER_EXTENSIONS)} files"
        )
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in RASTER_EXTENSIONS
    )
    if not files:
        raise FileNotFoundError(f"{root} holds no image files ({', '.join(RASTER_EXTENSIONS)})")
    return files


def read_prompts(path: Path, root: Path, files: Sequence[Path]) -> dict[str, str]:
    """Per-image prompts from a CSV with columns ``path`` (relative to ``root``) and ``prompt``.

    Args:
        path: the prompts CSV.
        root: the image folder the paths are relative to.
        files: the folder's image files (every row must name one).

    Returns:
        The prompt of each listed image, by its path relative to ``root`` (with ``/``).

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: a column is missing, or a row names an image that is not under ``root``.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"prompts file {path} does not exist (prompts_file is relative to root)"
        )
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"path", "prompt"} - set(table.columns)
    if missing:
        raise ValueError(f"{path} needs the columns 'path' and 'prompt'; missing {sorted(missing)}")
    known = {f.relative_to(root).as_posix() for f in files}
    unknown = [p for p in table["path"] if p not in known]
    if unknown:
        raise ValueError(
            f"{path}: rows name images that are not under {root}: {unknown[:5]} (paths are "
            "relative to root, with '/')"
        )
    return dict(zip(table["path"], table["prompt"], strict=True))


class ImageFolderDataset(Dataset):
    """The chips of every image under ``root``; see the module docstring for a sample's keys.

    Args:
        root: the image folder.
        image_size: chips are resized to this square size (the model's input).
        task: which prompt field a sample carries (``image_text``, ``conversation``,
            ``referring``).
        prompt: the prompt of every image (None: :data:`DEFAULT_PROMPTS`).
        prompts_file: a CSV under ``root`` with ``path`` and ``prompt`` columns (per image).
        bands: 1-based bands (or band names) to read (None: a file with as many bands as the
            model reads; :mod:`zoo.data.bands`).
        percentiles: the stretch of non-uint8 files (low, high percentile to 0, 255; None:
            their raw values, for a model normalized by per-band statistics).
        chip_size: chip side in source pixels (None: ``image_size``, the model's input at the
            file's own resolution: a larger chip would be shrunk to ``image_size``, changing
            the ground sample distance the model sees).
        overlap: pixels shared by neighbouring chips.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        task: Task = "image_text",
        prompt: str | None = None,
        prompts_file: str | None = None,
        bands: Sequence[int | str] | None = None,
        percentiles: tuple[float, float] | None = (2.0, 98.0),
        chip_size: int | None = None,
        overlap: int = 0,
    ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.task = task
        self.bands = None if bands is None else [b if isinstance(b, str) else int(b) for b in bands]
        #: The bands read and the model's channels (the datamodule sets its own).
        self.band_choice = BandChoice.of(self.bands)
        self.percentiles = percentiles
        self.files = find_images(self.root)
        default = prompt if prompt is not None else DEFAULT_PROMPTS[task]
        per_image = (
            read_prompts(self.root / prompts_file, self.root, self.files) if prompts_file else {}
        )
        self.prompts = [per_image.get(self.relative(f), default) for f in self.files]
        size = chip_size or image_size
        self.chips: list[tuple[int, Window, int, int]] = []  # file, window, index, count
        self.shapes: list[tuple[int, int]] = []
        self.grids: list[tuple[str, Any] | None] = []  # (CRS WKT, transform) per file
        for i, path in enumerate(self.files):
            with rasterio.open(path) as src:
                self.shapes.append((src.height, src.width))
                grid = (src.crs.to_wkt(), src.transform) if src.crs is not None else None
                self.grids.append(grid)
            windows = chip_windows(*self.shapes[-1], size, overlap)
            self.chips += [(i, w, k, len(windows)) for k, w in enumerate(windows)]
        self._limits: dict[int, np.ndarray | None] = {}  # per file, from its first chip

    def exclude(self, paths: Collection[str]) -> int:
        """Drop the chips of files that need no prediction (a resumed run's finished files).

        Args:
            paths: files relative to the folder (as in a sample's ``path``).

        Returns:
            How many of the folder's files were dropped.
        """
        drop = {i for i, f in enumerate(self.files) if self.relative(f) in set(paths)}
        self.chips = [c for c in self.chips if c[0] not in drop]
        return len(drop)

    def relative(self, path: Path) -> str:
        """A file's path relative to the folder, with ``/``.

        Args:
            path: a file under the folder.

        Returns:
            The POSIX relative path.
        """
        return path.relative_to(self.root).as_posix()

    def __len__(self) -> int:
        return len(self.chips)

    def raster(self, file: int) -> Raster:
        """The whole file read for the model (chips are read window by window instead).

        Args:
            file: the file's index in :attr:`files`.

        Returns:
            The raster read for the model.
        """
        return read_raster(self.files[file], self.band_choice, self.percentiles)

    def limits(self, file: int) -> np.ndarray | None:
        """The file's stretch limits (None for uint8), computed once.

        Args:
            file: the file's index in :attr:`files`.

        Returns:
            ``C×2`` limits of :func:`~zoo.data.rasters.stretch_limits`, or None.
        """
        if file not in self._limits:
            self._limits[file] = stretch_limits(
                self.files[file], self.band_choice, self.percentiles
            )
        return self._limits[file]

    def __getitem__(self, index: int) -> dict[str, Any]:
        file, w, k, count = self.chips[index]
        raster = read_raster(
            self.files[file], self.band_choice, self.percentiles, window=w, limits=self.limits(file)
        )
        image = torch.from_numpy(raster.pixels)
        size = (self.image_size, self.image_size)
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        path = self.relative(self.files[file])
        stem = path.rsplit(".", 1)[0].replace("/", "__")
        height, width = self.shapes[file]
        sample: dict[str, Any] = {
            "image": image.clamp(0, 255) if self.percentiles is not None else image,
            "id": stem if count == 1 else f"{stem}_r{w.row}_c{w.col}",
            "path": path,
            "chip": {
                "index": k,
                "count": count,
                "window": w.as_list(),
                "height": height,
                "width": width,
                "valid_fraction": float(raster.valid.mean()),
            },
            "geo": None,
        }
        if self.grids[file] is not None:
            crs, transform = self.grids[file]
            grid = window_transform(transform, w, *size)
            lat, lon = centre_lat_lon(crs, grid, *size)
            sample["geo"] = {
                "crs": crs,
                "transform": list(grid)[:6],
                "lat": lat,
                "lon": lon,
                "footprint": footprint(crs, grid, *size),
            }
            sample["location"] = torch.tensor([lat, lon], dtype=torch.float32)
        prompt = self.prompts[file]
        if self.task == "image_text":
            sample["caption"] = prompt
        else:
            sample["conversations"] = [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{prompt}"},
                {"from": "gpt", "value": ""},
            ]
            sample["task"] = self.task
            sample["question_type"] = ""
        return sample


class ImageFolderCollate:
    """Batch the folder's samples with a task's collate.

    Keeps ``path``, ``chip`` and ``geo`` as lists and stacks ``location`` (``B×2``) only when
    every sample has one.

    Args:
        inner: the task's collate function (e.g. :class:`~zoo.data.referring.ReferringCollate`).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        kept = {k: [s.get(k) for s in samples] for k in _LIST_KEYS}
        locations = [s.get("location") for s in samples]
        # ``geo`` and ``location`` stay out of the task's collate: a folder may mix georeferenced
        # files with plain photos, which the referring collate (whose batches are all or none
        # georeferenced) would refuse; the folder's batch keeps ``geo`` per sample.
        rest = [{k: v for k, v in s.items() if k not in (*_LIST_KEYS, "location")} for s in samples]
        batch = self.inner(rest)
        batch.update(kept)
        if all(isinstance(x, Tensor) for x in locations):
            batch["location"] = torch.stack(locations)
        return batch


class ImageFolderDataModule(ZooDataModule):
    """The user's own images for ``predict`` and ``zoo embed`` (``configs/data/images.yaml``).

    ``task`` says what the model reads: ``image_text`` (FLAVARS: images, the prompt as text),
    ``conversation`` (Aquila, FUSE: one question per image), ``referring`` (GeoPix: a
    segmentation request). The tokenizer and class names must be the ones the model was
    trained with: ``tokenizer`` (a Hugging Face id or folder, e.g. one saved with
    ``save_pretrained``), or None for the embedded dataset's word-level one (the default
    configs'); ``class_names`` None gives the embedded classes (scenes, or GeoPix's object
    categories).

    Args:
        root: the image folder (searched recursively).
        task: ``image_text``, ``conversation`` or ``referring``.
        prompt: the prompt of every image (None: the task's default).
        prompts_file: a CSV under root with ``path``, ``prompt`` columns (per-image prompts).
        bands: 1-based bands or band names (None: a file with as many bands as the model
            reads; :mod:`zoo.data.bands`); their number is the model's ``in_channels``.
        percentiles: low, high percentiles of the per-band stretch of non-uint8 files (None:
            raw values, for a model trained on raw reflectance with per-band statistics).
        chip_size: chip side in source pixels (None: ``image_size``, the file's own resolution;
            see :class:`ImageFolderDataset`).
        overlap: pixels shared by neighbouring chips.
        class_names: the model's classes (None: the embedded dataset's).
        max_length: prompts are truncated to this many tokens.
        num_scales: GeoPix's mask-decoder scales (segmentation tokens per target).
        per_scale: GeoPix's segmentation tokens per scale.
        max_targets: GeoPix's padded number of targets.
        image_size: the model's input size (linked to the model).
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer``, ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    def __init__(
        self,
        root: str = "data/images",
        task: Task = "image_text",
        prompt: str | None = None,
        prompts_file: str | None = None,
        bands: list[int | str] | None = None,
        percentiles: tuple[float, float] | None = (2.0, 98.0),
        chip_size: int | None = None,
        overlap: int = 0,
        class_names: list[str] | None = None,
        max_length: int = 192,
        num_scales: int = 2,
        per_scale: int = 3,
        max_targets: int = 3,
        image_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            ImageFolderDataset, root=root, image_size=image_size, bands=bands, **kwargs
        )
        self.task = task
        self.dataset_args = dict(
            task=task,
            prompt=prompt,
            prompts_file=prompts_file,
            bands=bands,
            percentiles=None if percentiles is None else tuple(percentiles),
            chip_size=chip_size,
            overlap=overlap,
        )
        self._class_names = class_names
        self.max_length = max_length
        self.num_scales = num_scales
        self.per_scale = per_scale
        self.max_targets = max_targets

    @cached_property
    def class_names(self) -> list[str]:
        """The model's classes (linked to it): given, else the embedded dataset's."""
        if self._class_names is not None:
            return list(self._class_names)
        classes = embedded.OBJECT_CATEGORIES if self.task == "referring" else embedded.SCENE_CLASSES
        return list(classes)

    def vocabulary(self) -> list[str]:
        """The embedded dataset's words for the task (the tiny models' word-level tokenizer).

        Returns:
            The vocabulary.
        """
        return (
            embedded_referring_vocabulary() if self.task == "referring" else embedded_vocabulary()
        )

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer the model was trained with (see the class docstring)."""
        vocabulary = None if self.tokenizer_name is not None else self.vocabulary()
        tokenizer = build_tokenizer(
            self.tokenizer_name,
            vocabulary,
            chat=self.task != "image_text",
            gguf_file=self.gguf_file,
        )
        if self.task == "referring":
            add_seg_tokens(tokenizer, self.num_scales, self.per_scale)
        return tokenizer

    def _dataset(self, split: str) -> ImageFolderDataset:
        return ImageFolderDataset(self.root, self.image_size, **self.dataset_args)

    def _collate(self) -> ImageFolderCollate:
        if self.task == "image_text":
            return ImageFolderCollate(TextCollate(self.tokenizer, self.max_length))
        if self.task == "conversation":
            return ImageFolderCollate(
                ConversationCollate(self.tokenizer, self.max_length, (), self.conversation)
            )
        collate = ReferringCollate(
            self.tokenizer, self.max_length, self.max_targets, self.conversation
        )
        collate.num_classes = len(self.class_names)
        return ImageFolderCollate(collate)

    def chip_settings(self) -> dict[str, Any]:
        """How the folder is read, as outputs record it (:mod:`zoo.provenance`).

        Returns:
            ``bands`` (None: the default RGB), ``chip_size`` (in source pixels), ``overlap``,
            ``image_size`` (the model's input), ``percentiles`` (None: raw values).
        """
        args = self.dataset_args
        return {
            "bands": args["bands"],
            "chip_size": args["chip_size"] or self.image_size,
            "overlap": args["overlap"],
            "image_size": self.image_size,
            "percentiles": None if args["percentiles"] is None else list(args["percentiles"]),
        }

    def setup(self, stage: str) -> None:
        """Build the predict dataset (the folder has images only, no labels).

        Args:
            stage: must be ``predict``.

        Raises:
            ValueError: ``stage`` is not ``predict``.
        """
        if stage != "predict":
            raise ValueError(
                f"ImageFolderDataModule has images only, no labels: it serves `zoo predict` and "
                f"`zoo embed`, not {stage!r} (train and evaluate on a labelled dataset's config)"
            )
        super().setup(stage)
        fixed_mmap_threshold()  # memory set by the batch over a long run (see there)
        log.info(
            "%d chips from %d images under %s",
            len(self.predict_dataset),
            len(self.predict_dataset.files),
            self.root,
        )
