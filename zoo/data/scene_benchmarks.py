"""Scene benchmarks in SkyScript's benchmark layout (wangzhecheng/SkyScript,
``benchmark_dataset_info.py`` and ``test_scene_and_fine_grained_classification.ipynb``): the suite
SkyScript, and FLAVARS after it, evaluate on.

Each dataset is a folder holding a class list (``classnames.txt``; the fine-grained tasks:
``classnames_v1.txt`` / ``classnames_v2.txt``), one class name a line in label order, and an
image table ``*_img_txt_pairs_*.csv`` / ``img_txt_pairs_*.csv`` with at least the columns
``filepath`` and a label column (``label``; the fine-grained tasks: ``label_v1`` / ``label_v2``)
holding a class name of the list or its 0-based index. Rows without a label are left out, as
SkyScript's loader does. SkyScript joins ``filepath`` to the benchmark root (the folder above
the dataset's); a path is read relative to the dataset folder when it is there, else relative
to that root. Batches follow the scene contract: ``image`` float ``B×3×S×S`` in [0, 255]
(normalized on the device), ``label`` long ``B``; ``class_names`` feeds zero-shot prompts.

SkyScript scores zero-shot accuracy on the whole table; the frozen-feature k-NN needs a bank,
so the table is split once, stratified by class with a fixed seed, into ``train`` (the bank)
and ``test`` (the queries, also the zero-shot set); ``val`` is ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from zoo.data.bands import RGB, BandChoice
from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD
from zoo.data.datamodules import Normalize
from zoo.data.image_text import load_image

__all__ = [
    "AIDBenchmarkDataModule",
    "FMoWBenchmarkDataModule",
    "MillionAIDBenchmarkDataModule",
    "RSICB256BenchmarkDataModule",
    "RoadSmoothnessBenchmarkDataModule",
    "RoadSurfaceBenchmarkDataModule",
    "RoofShapeBenchmarkDataModule",
    "SceneTableDataset",
    "SkyScriptBenchmarkDataModule",
    "SkyScriptClsBenchmarkDataModule",
]


class SceneTableDataset(Dataset):
    """Rows of a benchmark table: ``{"image": C×S×S float, "label": long}``.

    RGB files as RGB, or the bands the datamodule chooses (:attr:`band_choice`,
    :func:`zoo.data.image_text.load_image`).

    Args:
        root: the folder the image paths are relative to.
        paths: the images, relative to ``root``.
        labels: each image's class index.
        image_size: images are resized to this square size.
        title: the benchmark's name, for the messages.
    """

    def __init__(
        self, root: Path, paths: Sequence[str], labels: Sequence[int], image_size: int, title: str
    ) -> None:
        self.root, self.paths, self.labels = root, list(paths), list(labels)
        self.image_size, self.title = image_size, title
        #: The bands read from each file (the datamodule sets its own).
        self.band_choice: BandChoice = RGB

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        path = self.root / self.paths[index]
        try:
            pixels = load_image(path, "", self.band_choice)
        except ValueError:  # a band choice that does not fit: its message names the file
            raise
        except Exception as error:  # PIL and rasterio raise many types
            raise RuntimeError(
                f"could not read {self.title} image file {path}: {error}. The file is missing, "
                "corrupt or not an image: replace it (re-extract the archive)"
            ) from error
        image = pixels[None]
        image = F.interpolate(image, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        image = image[0].clamp(0, 255) if self.band_choice.is_default else image[0]  # raw: kept
        return {"image": image, "label": torch.tensor(self.labels[index])}


class SkyScriptBenchmarkDataModule(LightningDataModule):
    """A scene benchmark in SkyScript's layout (see the module docstring).

    Args:
        root: the dataset folder.
        table: the image table's file name under ``root``.
        title: the dataset's name in messages.
        classnames: the class list's file name under ``root``.
        label_column: the table's label column.
        test_fraction: share of each class in the ``test`` split (the rest is the k-NN bank).
        seed: seed of the split.
        batch_size: samples per batch.
        num_workers: data-loading processes.
        image_size: images are resized to this square size.
        mean: per-band mean of [0, 1] pixels, for normalization.
        std: per-band standard deviation of [0, 1] pixels.
        bands: the bands read from each file (1-based indices or names; None: RGB files as
            they are; :mod:`zoo.data.bands`).
        band_names: a name for each band read.
    """

    #: Where to get the data (named subclasses).
    source: ClassVar[str] = (
        "see SkyScript's benchmark_dataset_info.py (github.com/wangzhecheng/SkyScript)"
    )

    def __init__(
        self,
        root: str,
        table: str,
        title: str = "scene benchmark",
        classnames: str = "classnames.txt",
        label_column: str = "label",
        test_fraction: float = 0.5,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        bands: list[int | str] | None = None,
        band_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.band_choice = BandChoice.of(bands, band_names)
        if len(mean) != self.band_choice.channels or len(std) != self.band_choice.channels:
            raise ValueError(
                f"{title}: mean / std have {len(mean)} / {len(std)} values but the data reads "
                f"{self.band_choice.channels} bands: give one value per band"
            )
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.root, self.table, self.title = Path(root), table, title
        self.classnames, self.label_column = classnames, label_column
        self.test_fraction, self.seed = test_fraction, seed
        self.batch_size, self.num_workers, self.image_size = batch_size, num_workers, image_size
        self.aug = Normalize(mean, std)
        self.datasets: dict[str, SceneTableDataset] = {}

    def _missing(self, what: Path) -> FileNotFoundError:
        return FileNotFoundError(
            f"{self.title}: {what} does not exist. Get the dataset: {self.source}"
        )

    @property
    def class_names(self) -> list[str]:
        """The class names of the class list, in label order."""
        path = self.root / self.classnames
        if not path.is_file():
            raise self._missing(path)
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f"{path} must list at least 2 distinct class names, one a line")
        return names

    @property
    def num_channels(self) -> int:
        """The bands the model reads (linked to its ``in_channels``)."""
        return self.band_choice.channels

    @property
    def num_classes(self) -> int:
        """Number of scene classes."""
        return len(self.class_names)

    def _labels(self, path: Path, labels: pd.Series) -> np.ndarray:
        """Class indices of the label column: class names of the list, or 0-based indices."""
        names = self.class_names
        index = {name: i for i, name in enumerate(names)}
        if not set(labels) <= set(index) and labels.str.fullmatch(r"\d+").all():
            y = labels.astype(int).to_numpy()
            if y.max() >= len(names):
                raise ValueError(
                    f"{path}: label index {y.max()} is out of range for the {len(names)} classes "
                    f"of {self.root / self.classnames}"
                )
            return y
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(
                f"{path}: label(s) {unknown[:3]} are not in {self.root / self.classnames}"
            )
        return labels.map(index).to_numpy()

    def _image_root(self, path: Path, paths: np.ndarray) -> Path:
        """The folder ``filepath`` is relative to: the dataset's, or SkyScript's benchmark root
        (its parent), whichever holds the table's first image."""
        for base in (self.root, self.root.parent):
            if (base / paths[0]).is_file():
                return base
        raise FileNotFoundError(
            f"{self.title}: {path} lists {paths[0]!r}, which is neither under {self.root} nor "
            f"under {self.root.parent} (SkyScript's benchmark root): the images are missing or in "
            f"another layout. Get the dataset: {self.source}"
        )

    def setup(self, stage: str) -> None:
        """Read and check the table and split it (stratified, seeded); done once.

        Args:
            stage: any stage (the splits do not depend on it).

        Raises:
            FileNotFoundError: the table or its images are missing.
            ValueError: the table lacks a column, has no labelled row, or a label is not a class.
        """
        if self.datasets:
            return
        path = self.root / self.table
        if not path.is_file():
            raise self._missing(path)
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        for column in ("filepath", self.label_column):
            if column not in frame.columns:
                raise ValueError(f"{path} has no '{column}' column (found {list(frame.columns)})")
        frame = frame[frame[self.label_column].str.strip() != ""]  # unlabeled rows, as SkyScript
        if frame.empty:
            raise ValueError(f"{path} has no row with a '{self.label_column}'")
        y = self._labels(path, frame[self.label_column].str.strip())
        paths = frame["filepath"].astype(str).to_numpy()
        image_root = self._image_root(path, paths)
        rng = np.random.default_rng(self.seed)
        test = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == c))
            test[rows[: max(1, round(self.test_fraction * len(rows)))]] = True
        for split, keep in (("train", ~test), ("test", test)):
            self.datasets[split] = SceneTableDataset(
                image_root, paths[keep], y[keep].tolist(), self.image_size, self.title
            )
            self.datasets[split].band_choice = self.band_choice
        self.datasets["val"] = self.datasets["test"]

    @property
    def train_dataset(self) -> SceneTableDataset:
        """The k-NN bank (after :meth:`setup`)."""
        return self.datasets["train"]

    @property
    def val_dataset(self) -> SceneTableDataset:
        """The validation set: the test set (after :meth:`setup`)."""
        return self.datasets["val"]

    @property
    def test_dataset(self) -> SceneTableDataset:
        """The queries, also the zero-shot set (after :meth:`setup`)."""
        return self.datasets["test"]

    def _loader(self, split: str) -> DataLoader:
        self.setup("fit")
        return DataLoader(
            self.datasets[split], batch_size=self.batch_size, num_workers=self.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        """The k-NN bank's loader (in order).

        Returns:
            The loader.
        """
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """The validation loader (the test set).

        Returns:
            The loader.
        """
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """The test loader (the queries).

        Returns:
            The loader.
        """
        return self._loader("test")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalize the images once they are on the device (also outside a Trainer).

        Args:
            batch: the batch on the device.
            dataloader_idx: index of the loader (unused).

        Returns:
            The normalized batch.
        """
        return self.aug(batch)


#: SkyScript's benchmark archives (its README): <name>.zip under this address.
_SKYSCRIPT_BENCHMARKS = "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/benchmark/"


class _Named(SkyScriptBenchmarkDataModule):
    default_root: ClassVar[str]
    default_table: ClassVar[str]
    name: ClassVar[str]

    def __init__(self, root: str | None = None, table: str | None = None, **kwargs: Any) -> None:
        super().__init__(
            root or self.default_root, table or self.default_table, title=self.name, **kwargs
        )


class AIDBenchmarkDataModule(_Named):
    """AID (Xia et al. 2017; 30 classes, Google Earth RGB 600×600 px), SkyScript's test table."""

    default_root, default_table, name = "data/aid", "aid_img_txt_pairs_test.csv", "AID"
    source = f"AID from https://captain-whu.github.io/AID/, in SkyScript's layout: aid.zip from {_SKYSCRIPT_BENCHMARKS}"


class FMoWBenchmarkDataModule(_Named):
    """fMoW (Christie et al. 2018; RGB crops of functional map-of-the-world classes), SkyScript's
    validation table."""

    default_root, default_table, name = "data/fmow", "fmow_img_txt_pairs_val.csv", "fMoW"
    source = f"fMoW-RGB from https://github.com/fMoW/dataset, in SkyScript's layout: fmow.zip from {_SKYSCRIPT_BENCHMARKS}"


class MillionAIDBenchmarkDataModule(_Named):
    """Million-AID (Long et al. 2021; 51 classes), SkyScript's table."""

    default_root, default_table, name = "data/millionaid", "img_txt_pairs_train.csv", "Million-AID"
    source = f"Million-AID from https://captain-whu.github.io/DiRS/, in SkyScript's layout: millionaid.zip from {_SKYSCRIPT_BENCHMARKS}"


class RSICB256BenchmarkDataModule(_Named):
    """RSI-CB256 (Li et al. 2020; 35 classes, 256×256 px), SkyScript's table."""

    default_root, default_table, name = "data/rsicb256", "img_txt_pairs_train.csv", "RSI-CB256"
    source = f"RSI-CB from https://github.com/lehaifeng/RSI-CB, in SkyScript's layout: rsicb256.zip from {_SKYSCRIPT_BENCHMARKS}"


class SkyScriptClsBenchmarkDataModule(_Named):
    """SkyScript_cls (Wang et al. 2024): SkyScript's in-domain scene test set, 70 classes of
    OpenStreetMap objects, its validation table."""

    default_root, default_table, name = (
        "data/SkyScript_cls",
        "img_txt_pairs_val.csv",
        "SkyScript_cls",
    )
    source = (
        f"SkyScript_cls.zip from {_SKYSCRIPT_BENCHMARKS} (SkyScript's README, benchmark datasets)"
    )


class _FineGrained(_Named):
    """SkyScript's fine-grained attribute tasks: ``img_txt_pairs_test.csv`` with two label sets,
    ``label_v1`` / ``classnames_v1.txt`` and ``label_v2`` / ``classnames_v2.txt`` (``labels``)."""

    default_table = "img_txt_pairs_test.csv"

    def __init__(
        self,
        root: str | None = None,
        table: str | None = None,
        labels: Literal["v1", "v2"] = "v1",
        **kwargs: Any,
    ) -> None:
        if labels not in ("v1", "v2"):
            raise ValueError(f"{self.name}: labels must be 'v1' or 'v2', got {labels!r}")
        super().__init__(
            root,
            table,
            classnames=f"classnames_{labels}.txt",
            label_column=f"label_{labels}",
            **kwargs,
        )


class RoofShapeBenchmarkDataModule(_FineGrained):
    """Roof shape (SkyScript's fine-grained task: the OSM ``roof:shape`` of a building; the paper's
    test set: flat, hipped, gabled, dome, pyramidal, round)."""

    default_root, name = "data/roof_shape", "roof shape"
    source = f"roof_shape.zip from {_SKYSCRIPT_BENCHMARKS} (SkyScript's README, fine-grained classification)"


class RoadSmoothnessBenchmarkDataModule(_FineGrained):
    """Road smoothness (SkyScript's fine-grained task: the OSM ``smoothness`` of a road; the paper's
    test set: excellent, good, intermediate, bad, very bad)."""

    default_root, name = "data/smoothness", "road smoothness"
    source = f"smoothness.zip from {_SKYSCRIPT_BENCHMARKS} (SkyScript's README, fine-grained classification)"


class RoadSurfaceBenchmarkDataModule(_FineGrained):
    """Road surface (SkyScript's fine-grained task: the OSM ``surface`` material of a road; the
    paper's test set: asphalt, concrete, grass, gravel, sand)."""

    default_root, name = "data/surface", "road surface"
    source = f"surface.zip from {_SKYSCRIPT_BENCHMARKS} (SkyScript's README, fine-grained classification)"
