"""Datamodules producing the batch contract of DESIGN.md (torchgeo ``NonGeoDataModule``s)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import default_collate
from torchgeo.datamodules import NonGeoDataModule
from transformers import PreTrainedTokenizerBase

from zoo.data import embedded
from zoo.data.image_text import ImageTextLocationDataset, caption_words, read_table
from zoo.data.tokenize import build_tokenizer

__all__ = ["EmbeddedDataModule", "ImageTextLocationDataModule"]

log = logging.getLogger(__name__)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize:
    """Scale ``batch['image']`` from [0, 255] to zero mean and unit variance per band."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std).view(1, -1, 1, 1) * 255.0

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        image = batch["image"]
        batch["image"] = (image - self.mean.to(image)) / self.std.to(image)
        return batch


class TextCollate:
    """Stack tensors, keep strings as lists, and tokenise ``caption`` into ``input_ids``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = default_collate(samples)
        tokens = self.tokenizer(
            batch["caption"],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = tokens["input_ids"]
        batch["attention_mask"] = tokens["attention_mask"]
        return batch


class ImageTextLocationDataModule(NonGeoDataModule):
    """Image-caption(-location) tables in SkyScript's CSV format (and its superset).

    Args:
        root: folder with ``train.csv``, ``val.csv``, ``test.csv`` and the images they name.
        batch_size: samples per batch and device.
        num_workers: data-loading processes.
        image_size: images are resized to this square size.
        tokenizer: a Hugging Face tokenizer id or local folder (use the text encoder's own);
            None builds a word-level vocabulary from the training captions.
        max_text_length: captions are truncated to this many tokens.
        class_names: scene classes in label order (default: sorted labels of the train table).
        mean: per-band mean of [0, 1] pixels, for normalisation.
        std: per-band standard deviation of [0, 1] pixels.
    """

    def __init__(
        self,
        root: str = "data/skyscript",
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 224,
        tokenizer: str | None = None,
        max_text_length: int = 64,
        class_names: list[str] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(ImageTextLocationDataset, batch_size, num_workers)
        self.root = root
        self.image_size = image_size
        self.tokenizer_name = tokenizer
        self.max_text_length = max_text_length
        self._class_names = class_names
        self.aug = Normalize(mean, std)

    @property
    def dataset_root(self) -> Path:
        """The folder the tables are read from."""
        return Path(self.root)

    @cached_property
    def class_names(self) -> list[str]:
        """Scene classes in label order (linked to the model for zero-shot prompts)."""
        if self._class_names is not None:
            return list(self._class_names)
        table = read_table(self.dataset_root / "train.csv")
        if "label" not in table.columns:
            return []
        return sorted(table["label"].astype(str).unique())

    def vocabulary(self) -> list[str]:
        """Words of a word-level tokenizer (used only when ``tokenizer`` is None)."""
        return caption_words(read_table(self.dataset_root / "train.csv")["caption"].tolist())

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The tokenizer of the captions (linked to the model, which sizes its text encoder)."""
        vocabulary = None if self.tokenizer_name is not None else self.vocabulary()
        return build_tokenizer(self.tokenizer_name, vocabulary)

    def _dataset(self, split: str) -> ImageTextLocationDataset:
        return ImageTextLocationDataset(
            self.dataset_root, split, self.class_names or None, self.image_size
        )

    def setup(self, stage: str) -> None:
        """Build the split datasets for ``stage`` and the tokenising collate function."""
        self.collate_fn = TextCollate(self.tokenizer, self.max_text_length)
        if stage == "fit":
            self.train_dataset = self._dataset("train")
            self.val_dataset = self._dataset("val")
            if not self.train_dataset.has_location:
                rank_zero_warn(
                    f"{self.train_dataset.table_path} has no 'lat'/'lon' columns: batches carry "
                    "no 'location', so the image-location losses are switched off"
                )
        elif stage == "validate":
            self.val_dataset = self._dataset("val")
        elif stage in ("test", "predict"):
            self.test_dataset = self._dataset("test")
            self.predict_dataset = self.test_dataset

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Normalise the images once they are on the device (also outside a Trainer)."""
        return self.aug(batch)

    def transfer_batch_to_device(self, batch: dict[str, Any], device: torch.device, idx: int) -> Any:
        """Move tensors, leave the caption strings where they are."""
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


class EmbeddedDataModule(ImageTextLocationDataModule):
    """The embedded synthetic dataset: written on first use (``prepare_data``), then read as tables.

    The dataset is generated under ``root/<parameters>`` so that runs with different sizes or
    seeds never overwrite each other, and deterministically for a seed.

    Args:
        root: parent folder of the generated datasets.
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        seed: generator seed.
        batch_size: samples per batch and device.
        num_workers: data-loading processes.
        image_size: generated image size in pixels.
        tokenizer: a Hugging Face tokenizer id; None uses the generator's own vocabulary.
        max_text_length: captions are truncated to this many tokens.
    """

    def __init__(
        self,
        root: str = "data/embedded",
        num_train: int = 2000,
        num_val: int = 250,
        num_test: int = 250,
        seed: int = 0,
        batch_size: int = 64,
        num_workers: int = 0,
        image_size: int = 64,
        tokenizer: str | None = None,
        max_text_length: int = 48,
    ) -> None:
        super().__init__(
            root, batch_size, num_workers, image_size, tokenizer, max_text_length,
            class_names=list(embedded.SCENE_CLASSES),
        )
        self.sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}
        self.seed = seed

    @property
    def dataset_root(self) -> Path:
        n = self.sizes
        name = (
            f"v{embedded.DATASET_VERSION}-seed{self.seed}-{self.image_size}px-"
            f"{n['num_train']}-{n['num_val']}-{n['num_test']}"
        )
        return Path(self.root) / name

    def vocabulary(self) -> list[str]:
        return embedded.vocabulary()

    def prepare_data(self) -> None:
        """Generate the dataset unless a complete copy with these parameters exists."""
        if embedded.is_complete(self.dataset_root, image_size=self.image_size, seed=self.seed, **self.sizes):
            log.info("embedded dataset found at %s", self.dataset_root)
            return
        embedded.generate(self.dataset_root, image_size=self.image_size, seed=self.seed, **self.sizes)
