"""Scene benchmarks in SkyScript's benchmark layout (wangzhecheng/SkyScript,
``benchmark_dataset_info.py``): the suite SkyScript, and FLAVARS after it, evaluate on.

Each dataset is a folder holding ``classnames.txt`` (one class name a line, in label order) and
an image table ``*_img_txt_pairs_*.csv`` / ``img_txt_pairs_*.csv`` with at least the columns
``filepath`` (relative to the folder) and ``label`` (a class name of ``classnames.txt``). Batches
follow the scene contract: ``image`` float ``B×3×S×S`` in [0, 255] (normalized on the device),
``label`` long ``B``; ``class_names`` feeds zero-shot prompts.

SkyScript scores zero-shot accuracy on the whole table; the frozen-feature k-NN needs a bank,
so the table is split once, stratified by class with a fixed seed, into ``train`` (the bank)
and ``test`` (the queries, also the zero-shot set); ``val`` is ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD
from zoo.data.datamodules import Normalize

__all__ = [
    "AIDBenchmarkDataModule",
    "FMoWBenchmarkDataModule",
    "MillionAIDBenchmarkDataModule",
    "RSICB256BenchmarkDataModule",
    "SceneTableDataset",
    "SkyScriptBenchmarkDataModule",
]


class SceneTableDataset(Dataset):
    """Rows ``indices`` of a benchmark table: ``{"image": 3×S×S float, "label": long}``."""

    def __init__(self, root: Path, paths: Sequence[str], labels: Sequence[int], image_size: int, title: str) -> None:
        self.root, self.paths, self.labels = root, list(paths), list(labels)
        self.image_size, self.title = image_size, title

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        path = self.root / self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
        except Exception as error:  # PIL raises many types
            raise RuntimeError(
                f"could not read {self.title} image file {path}: {error}. The file is missing, "
                "corrupt or not an image: replace it (re-extract the archive)"
            ) from error
        image = torch.from_numpy(pixels).permute(2, 0, 1)[None]
        image = F.interpolate(image, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        return {"image": image[0].clamp(0, 255), "label": torch.tensor(self.labels[index])}


class SkyScriptBenchmarkDataModule(LightningDataModule):
    """A scene benchmark in SkyScript's layout (see the module docstring).

    Args:
        root: the dataset folder.
        table: the image table's file name under ``root``.
        title: the dataset's name in messages.
        test_fraction: share of each class in the ``test`` split (the rest is the k-NN bank).
        seed: seed of the split.
        batch_size: samples per batch.
        num_workers: data-loading processes.
        image_size: images are resized to this square size.
        mean: per-band mean of [0, 1] pixels, for normalization.
        std: per-band standard deviation of [0, 1] pixels.
    """

    #: Where to get the data (named subclasses).
    source: ClassVar[str] = "see SkyScript's benchmark_dataset_info.py (github.com/wangzhecheng/SkyScript)"

    def __init__(
        self,
        root: str,
        table: str,
        title: str = "scene benchmark",
        test_fraction: float = 0.5,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.root, self.table, self.title = Path(root), table, title
        self.test_fraction, self.seed = test_fraction, seed
        self.batch_size, self.num_workers, self.image_size = batch_size, num_workers, image_size
        self.aug = Normalize(mean, std)
        self.datasets: dict[str, SceneTableDataset] = {}

    def _missing(self, what: Path) -> FileNotFoundError:
        return FileNotFoundError(f"{self.title}: {what} does not exist. Get the dataset: {self.source}")

    @property
    def class_names(self) -> list[str]:
        """The class names of ``classnames.txt``, in label order."""
        path = self.root / "classnames.txt"
        if not path.is_file():
            raise self._missing(path)
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f"{path} must list at least 2 distinct class names, one a line")
        return names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str) -> None:
        """Read and check the table and split it (stratified, seeded)."""
        if self.datasets:
            return
        path = self.root / self.table
        if not path.is_file():
            raise self._missing(path)
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        for column in ("filepath", "label"):
            if column not in frame.columns:
                raise ValueError(f"{path} has no '{column}' column (found {list(frame.columns)})")
        index = {name: i for i, name in enumerate(self.class_names)}
        labels = frame["label"].astype(str)
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ValueError(
                f"{path}: label(s) {unknown[:3]} are not in {self.root / 'classnames.txt'}"
            )
        y = labels.map(index).to_numpy()
        rng = np.random.default_rng(self.seed)
        test = np.zeros(len(y), dtype=bool)
        for c in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == c))
            test[rows[: max(1, round(self.test_fraction * len(rows)))]] = True
        paths = frame["filepath"].astype(str).to_numpy()
        for split, keep in (("train", ~test), ("test", test)):
            self.datasets[split] = SceneTableDataset(self.root, paths[keep], y[keep].tolist(), self.image_size, self.title)
        self.datasets["val"] = self.datasets["test"]

    def _loader(self, split: str) -> DataLoader:
        self.setup("fit")
        return DataLoader(self.datasets[split], batch_size=self.batch_size, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalize the images once they are on the device (also outside a Trainer)."""
        return self.aug(batch)


class _Named(SkyScriptBenchmarkDataModule):
    default_root: ClassVar[str]
    default_table: ClassVar[str]
    name: ClassVar[str]

    def __init__(self, root: str | None = None, table: str | None = None, **kwargs: Any) -> None:
        super().__init__(root or self.default_root, table or self.default_table, title=self.name, **kwargs)


class AIDBenchmarkDataModule(_Named):
    """AID (Xia et al. 2017; 30 classes, Google Earth RGB 600×600 px), SkyScript's test table."""

    default_root, default_table, name = "data/aid", "aid_img_txt_pairs_test.csv", "AID"
    source = "AID from https://captain-whu.github.io/AID/, the table as SkyScript's benchmark release"


class FMoWBenchmarkDataModule(_Named):
    """fMoW (Christie et al. 2018; RGB crops of functional map-of-the-world classes), SkyScript's
    validation table."""

    default_root, default_table, name = "data/fmow", "fmow_img_txt_pairs_val.csv", "fMoW"
    source = "fMoW-RGB from https://github.com/fMoW/dataset, the table as SkyScript's benchmark release"


class MillionAIDBenchmarkDataModule(_Named):
    """Million-AID (Long et al. 2021; 51 classes), SkyScript's table."""

    default_root, default_table, name = "data/millionaid", "img_txt_pairs_train.csv", "Million-AID"
    source = "Million-AID from https://captain-whu.github.io/DiRS/, the table as SkyScript's benchmark release"


class RSICB256BenchmarkDataModule(_Named):
    """RSI-CB256 (Li et al. 2020; 35 classes, 256×256 px), SkyScript's table."""

    default_root, default_table, name = "data/rsicb256", "img_txt_pairs_train.csv", "RSI-CB256"
    source = "RSI-CB from https://github.com/lehaifeng/RSI-CB, the table as SkyScript's benchmark release"
