"""Images with their COCO instances, for the hallucination protocol (and any instance-level
evaluation): each sample carries its image's objects.

``root`` holds a COCO instances file per split (``instances_{split}.json`` unless named
otherwise) and the images its ``file_name`` fields name (relative to ``image_root``, default
``root``). A sample is ``{"image", "path", "index", "instances"}``: ``instances`` lists the
image's objects as ``{"category": name, "colour": str | None, "cell": 3×3 cell}``, the
category as the file names it, ``colour`` where the annotation has one (the embedded data's),
``cell`` the cell of the object's centre (:func:`~zoo.metrics.hallucination.cell_of_point`):
the mask's centroid where the annotation has a segmentation, else the box centre. The embedded
dataset writes this layout (:class:`EmbeddedInstancesDataModule`); DIOR, iSAID or any dataset
converted to COCO JSON read the same way (:class:`CocoInstancesDataModule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.nn import functional as F
from torch.utils.data import Dataset

from zoo.data.batch import InstancesBatch
from zoo.data.coco_refs import load_coco
from zoo.data.datamodules import (
    DEFAULT_SPLITS,
    EmbeddedSource,
    EmbeddedSplits,
    ZooDataModule,
    embedded_vocabulary,
)
from zoo.data.image_text import caption_words, load_image
from zoo.io import require_dir
from zoo.metrics.hallucination import cell_of_point

__all__ = [
    "CocoInstancesDataModule",
    "CocoInstancesDataset",
    "EmbeddedInstancesDataModule",
    "collate_instances",
    "image_instances",
]


def image_instances(coco: COCO, image_id: int, where: str) -> list[dict[str, Any]]:
    """The objects of one image: category name, colour (or None) and 3×3 cell.

    Args:
        coco: the indexed instances.
        image_id: the image.
        where: the file the instances come from (error messages).

    Returns:
        One ``{"category", "colour", "cell"}`` per annotation, in the file's order.

    Raises:
        ValueError: the image has no ``width`` / ``height``, or an annotation names an unknown
            category or has neither a segmentation nor a box.
    """
    info = coco.imgs[image_id]
    if not all(isinstance(info.get(k), (int, float)) and info[k] > 0 for k in ("width", "height")):
        raise ValueError(
            f"{where}: image {image_id} ({info.get('file_name')}) needs positive 'width' and "
            "'height' (the objects' 3×3 cells are read from them); add them to the file"
        )
    width, height = float(info["width"]), float(info["height"])
    objects = []
    for ann in coco.imgToAnns.get(image_id, []):
        cat = coco.cats.get(ann.get("category_id"))
        if cat is None:
            raise ValueError(
                f"{where}: annotation {ann.get('id')} of image {image_id} has category_id "
                f"{ann.get('category_id')!r}, which 'categories' does not list"
            )
        if ann.get("segmentation"):
            rows, cols = np.nonzero(coco.annToMask(ann))
            if len(rows) == 0:
                raise ValueError(f"{where}: annotation {ann.get('id')} has an empty mask")
            x, y = float(cols.mean()) + 0.5, float(rows.mean()) + 0.5  # pixel centres
        elif ann.get("bbox"):
            bx, by, bw, bh = (float(v) for v in ann["bbox"][:4])
            x, y = bx + bw / 2, by + bh / 2
        else:
            raise ValueError(
                f"{where}: annotation {ann.get('id')} of image {image_id} has neither "
                "'segmentation' nor 'bbox'; its position cannot be known"
            )
        objects.append({
            "category": str(cat["name"]),
            "colour": ann.get("colour"),
            "cell": cell_of_point(x, y, width, height),
        })  # fmt: skip
    return objects


class CocoInstancesDataset(Dataset):
    """The images of a COCO instances file, each with its objects.

    Args:
        instances: the COCO instances JSON file.
        image_root: the folder the images' ``file_name`` are relative to.
        image_size: resize every image to this square size (None keeps the file's size).
    """

    def __init__(self, instances: Path, image_root: Path, image_size: int | None = None) -> None:
        self.source = Path(instances)
        self.coco = load_coco(self.source)
        self.image_root = Path(image_root)
        self.image_size = image_size
        self.image_ids = sorted(self.coco.imgs)
        #: The objects of every image, in :attr:`image_ids` order.
        self.instances = [image_instances(self.coco, i, str(self.source)) for i in self.image_ids]

    @cached_property
    def category_names(self) -> list[str]:
        """The file's category names, by id."""
        return [str(self.coco.cats[k]["name"]) for k in sorted(self.coco.cats)]

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.coco.imgs[self.image_ids[index]]
        image = load_image(
            self.image_root / info["file_name"], f" (image {info['id']} of {self.source})"
        )
        if self.image_size is not None and image.shape[-2:] != (self.image_size,) * 2:
            size = (self.image_size, self.image_size)
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        return {
            "image": image,
            "path": str(info["file_name"]),
            "index": index,
            "instances": self.instances[index],
        }


def collate_instances(samples: Sequence[dict[str, Any]]) -> InstancesBatch:
    """Stack the images and indices; keep paths and instance lists as lists.

    Args:
        samples: :class:`CocoInstancesDataset` samples.

    Returns:
        The batch: ``image`` ``B×C×H×W``, ``index`` long ``B``, ``path`` and ``instances``.
    """
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "index": torch.tensor([s["index"] for s in samples], dtype=torch.long),
        "path": [s["path"] for s in samples],
        "instances": [s["instances"] for s in samples],
    }


class CocoInstancesDataModule(ZooDataModule):
    """Images and their COCO instances (DIOR, iSAID, any COCO-format set) for evaluation.

    Args:
        root: the dataset folder.
        instances: the instances file of a split under ``root``, ``{split}`` replaced by the
            split's name.
        image_root: the folder ``file_name`` is relative to, under ``root`` (default ``root``).
        batch_size: images per batch.
        image_size: images are resized to this square size (linked to the model).
        **kwargs: ``num_workers``, ``tokenizer``, ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    def __init__(
        self,
        root: str = "data/coco",
        instances: str = "instances_{split}.json",
        image_root: str = "",
        batch_size: int = 16,
        image_size: int = 224,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            CocoInstancesDataset, root=root, batch_size=batch_size, image_size=image_size, **kwargs
        )
        self.instances = instances
        self.image_root = image_root

    def instances_file(self, split: str) -> Path:
        """The instances file of ``split``.

        Args:
            split: ``train``, ``val`` or ``test``.

        Returns:
            Its path.
        """
        root = require_dir(
            self.dataset_root, "Set data.init_args.root to the folder of the COCO instances."
        )
        return root / self.instances.format(split=split)

    def vocabulary(self) -> list[str]:
        """The words of the test file's category names (a word-level tokenizer's; evaluation
        uses the model's own).

        Returns:
            The sorted words.
        """
        coco = load_coco(self.instances_file("test"))
        return caption_words([str(c["name"]) for c in coco.cats.values()])

    def _dataset(self, split: str) -> CocoInstancesDataset:
        return CocoInstancesDataset(
            self.instances_file(split), self.dataset_root / self.image_root, self.image_size
        )

    def _collate(self) -> Any:
        return collate_instances


class EmbeddedInstancesDataModule(CocoInstancesDataModule):
    """The embedded dataset's COCO instances (``instances_{split}.json``, with each object's
    colour), written on first use like the other embedded datamodules.

    Args:
        root: parent folder of the generated datasets.
        splits: images per split (the same as the fit's reuses its copy).
        seed: generator seed.
        image_size: generated image size in pixels.
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer``, ``mean``, ``std``.
    """

    def __init__(
        self,
        root: str = "data/embedded",
        splits: EmbeddedSplits = DEFAULT_SPLITS,
        seed: int = 0,
        image_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, image_size=image_size, **kwargs)
        self.seed = seed
        self.source = EmbeddedSource(root, image_size, seed, splits)

    def vocabulary(self) -> list[str]:
        """The embedded dataset's words (:func:`~zoo.data.datamodules.embedded_vocabulary`).

        Returns:
            The words of the word-level tokenizer.
        """
        return embedded_vocabulary()
