"""SpaceNet 1 building footprints as binary semantic segmentation.

Batch: ``image`` float ``B×3×S×S`` (normalized on the device) and ``semantic_mask`` long
``B×S×S`` with 0 = background and 1 = building. torchgeo's sample key ``mask`` is renamed: in
the zoo's batch contract ``mask`` means instance masks ``B×K×H×W``.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio as rio
import torch
from pyproj import CRS
from rasterio.transform import Affine
from torch import Tensor
from torch.nn import functional as F
from torchgeo.datamodules import SpaceNet1DataModule
from torchgeo.datasets import SpaceNet1
from torchgeo.datasets.errors import DatasetNotFoundError

from zoo.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, Normalize
from zoo.data.scenes import DatasetMissingError

__all__ = ["SegmentationTransform", "SpaceNet1Buildings", "SpaceNet1SegmentationDataModule"]

HOW_TO_GET = (
    "SpaceNet 1: download=True copies the tarballs from "
    "s3://spacenet-dataset/spacenet/SN1_buildings/tarballs/ (needs the AWS CLI, `aws` on PATH; "
    "see https://spacenet.ai/spacenet-buildings-dataset-v1/), or extract "
    "SN1_buildings_train_AOI_1_Rio_{3band,geojson_buildings}.tar.gz into "
    "<root>/SN1_buildings/train/ (folders 3band/ and geojson/)"
)


class SpaceNet1Buildings(SpaceNet1):
    """torchgeo's :class:`~torchgeo.datasets.SpaceNet1` with checked inputs.

    Differences from torchgeo: chips are read at their own size (torchgeo resamples every
    chip to 406×439 but rasterizes the footprints with the file's transform, which misaligns
    chips of another size; the datamodule resizes anyway); an unreadable chip, a chip with the
    wrong band count, a corrupt GeoJSON (torchgeo reads it as "no buildings") and an image or
    label without its partner are errors that name the file; a missing root is reported
    without creating folders in it.

    Args:
        root: folder holding ``SN1_buildings/<split>/{3band,8band,geojson}``.
        split: ``train`` (with labels) or ``test`` (images only).
        image: ``3band`` (pansharpened RGB, 8-bit, 50 cm) or ``8band`` (multispectral, 1 m).
        transforms: a function applied to each sample dict.
        download: fetch the tarballs from AWS S3 (needs the AWS CLI).
        checksum: check the tarballs' MD5.
    """

    def __init__(
        self,
        root: str = "data/spacenet1",
        split: str = "train",
        image: str = "3band",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        download: bool = False,
        checksum: bool = False,
    ) -> None:
        if not download and not os.path.isdir(root):
            raise DatasetMissingError(f"SpaceNet 1 root {root} does not exist. {HOW_TO_GET}")
        try:
            super().__init__(
                root,
                split,
                image=image,
                transforms=transforms,
                download=download,
                checksum=checksum,
            )
        except DatasetNotFoundError as error:
            raise DatasetMissingError(f"{error} {HOW_TO_GET}") from error

    def _verify(self) -> None:
        super()._verify()
        if self.split != "train":
            return
        folder = os.path.join(self.root, self.dataset_id, self.split)
        labelled = {tuple(self._image_id(m)) for m in self.masks}
        chips = glob.glob(os.path.join(folder, self.image, self.image_glob))
        unlabelled = sorted(p for p in chips if tuple(self._image_id(p)) not in labelled)
        found = {tuple(self._image_id(p)) for p in self.images}
        orphans = sorted(m for m in self.masks if tuple(self._image_id(m)) not in found)
        if unlabelled or orphans:
            example = (unlabelled or orphans)[0]
            raise FileNotFoundError(
                f"SpaceNet 1 under {folder}: {len(unlabelled)} {self.image} chip(s) without a "
                f"GeoJSON and {len(orphans)} GeoJSON(s) without a chip, e.g. {example}: the data "
                "is incomplete; re-extract the tarballs"
            )

    def _load_image(self, path: str) -> tuple[Tensor, Affine, CRS]:
        expected = 3 if self.image == "3band" else 8
        try:
            with rio.open(path) as img:
                array, transform, crs = img.read(), img.transform, img.crs
        except rio.errors.RasterioError as error:
            raise RuntimeError(
                f"could not read SpaceNet 1 chip {path}: {error}. The file is corrupt: replace it "
                "(re-extract the tarball)"
            ) from error
        if array.shape[0] != expected:
            raise ValueError(
                f"SpaceNet 1 chip {path} has {array.shape[0]} band(s); {self.image} chips have "
                f"{expected}"
            )
        if crs is None:
            raise ValueError(f"SpaceNet 1 chip {path} has no CRS: its footprints cannot be placed")
        return torch.from_numpy(array.astype(np.float32)), transform, crs

    def _load_mask(self, path: str, tfm: Affine, raster_crs: CRS, shape: tuple[int, int]) -> Tensor:
        text = Path(path).read_text()
        if not text.strip():  # SpaceNet's empty label files: no buildings
            return torch.zeros(shape, dtype=torch.long)
        try:
            json.loads(text)
            return super()._load_mask(path, tfm, raster_crs, shape)
        except Exception as error:  # json, pyogrio, pyproj and shapely raise many types
            raise ValueError(
                f"could not read the building footprints {path}: {error}. It is not valid "
                "GeoJSON: replace it (re-extract the tarball)"
            ) from error


class SegmentationTransform:
    """Per sample: resize the image and ``mask`` and rename ``mask`` to ``semantic_mask``.

    The image is resized with antialiased bilinear interpolation, the mask (long) with nearest
    neighbour, both to ``size``×``size``.

    Args:
        size: the output side, in pixels.
    """

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, sample: dict[str, Tensor]) -> dict[str, Tensor]:
        """Resize one sample.

        Args:
            sample: ``image`` and, optionally, ``mask``.

        Returns:
            ``image`` (float) and, with a mask, ``semantic_mask`` (long).
        """
        size = (self.size, self.size)
        image = sample["image"].float()
        if image.shape[-2:] != size:
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        out = {"image": image}
        if "mask" in sample:
            mask = sample["mask"].long()
            if mask.shape[-2:] != size:
                mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")
                mask = mask[0, 0].long()
            out["semantic_mask"] = mask
        return out


def random_dihedral(batch: dict[str, Any]) -> dict[str, Any]:
    """Random flips and 90° rotations (the 8 symmetries of the square), one per sample.

    Applied alike to ``image`` and ``semantic_mask``.

    Args:
        batch: a batch with square ``image`` and optionally ``semantic_mask``.

    Returns:
        The same batch, transformed.
    """
    image = batch["image"]
    draws = torch.rand(image.shape[0], 3, device=image.device) < 0.5
    moves = (lambda x: x.flip(-1), lambda x: x.flip(-2), lambda x: x.transpose(-1, -2))
    for key in ("image", "semantic_mask"):
        if key not in batch:
            continue
        x = batch[key]
        shape = (-1,) + (1,) * (x.dim() - 1)
        for k, move in enumerate(moves):
            x = torch.where(draws[:, k].view(shape), move(x), x)
        batch[key] = x
    return batch


class SpaceNet1SegmentationDataModule(SpaceNet1DataModule):
    """SpaceNet 1 (Rio de Janeiro, WorldView-2 pansharpened RGB at 50 cm, 406×439 px chips)
    building footprints as binary semantic segmentation.

    As torchgeo's :class:`~torchgeo.datamodules.SpaceNet1DataModule`, the labelled ``train``
    folder is split at random into train/val/test by ``val_split_pct``/``test_split_pct`` with
    a fixed generator seed (0); ``predict`` uses the unlabelled ``test`` folder. Every chip is
    resized to ``image_size``×``image_size`` (image bilinear, mask nearest); training batches
    get random flips and 90° rotations when ``augment`` (only inside a Trainer, while
    training). Batch: ``image`` float ``B×3×S×S`` (8-bit RGB normalized with ``mean``/``std``),
    ``semantic_mask`` long ``B×S×S`` (0 background, 1 building).

    Paper: A. Van Etten, D. Lindenbaum, T. M. Bacastow, "SpaceNet: A Remote Sensing Dataset
    and Challenge Series", arXiv:1807.01232, 2018.
    Licence: CC BY-SA 4.0. Data: ``s3://spacenet-dataset/spacenet/SN1_buildings/`` (AWS open
    data; ``download=True`` uses the AWS CLI), see
    https://spacenet.ai/spacenet-buildings-dataset-v1/.

    Args:
        root: folder holding ``SN1_buildings/train/{3band,geojson}``.
        batch_size: samples per batch.
        num_workers: data-loading processes.
        image_size: chips are resized to this square size.
        val_split_pct: fraction of the labelled chips used for validation.
        test_split_pct: fraction of the labelled chips used for testing.
        augment: random flips and 90° rotations of training batches.
        download: fetch the tarballs into ``root`` when missing (AWS CLI).
        mean: per-band mean of [0, 1] pixels, for normalization.
        std: per-band standard deviation of [0, 1] pixels.
    """

    def __init__(
        self,
        root: str = "data/spacenet1",
        batch_size: int = 16,
        num_workers: int = 0,
        image_size: int = 448,
        val_split_pct: float = 0.1,
        test_split_pct: float = 0.2,
        augment: bool = True,
        download: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_workers=num_workers,
            val_split_pct=val_split_pct,
            test_split_pct=test_split_pct,
            root=root,
            image="3band",
            transforms=SegmentationTransform(image_size),
            download=download,
        )
        self.dataset_class = self.spacenet_ds_class = SpaceNet1Buildings
        self.root = root
        self.image_size = image_size
        self.augment = augment
        self.aug = Normalize(mean, std)
        self.train_aug = self.predict_aug = None

    @property
    def class_names(self) -> list[str]:
        """Semantic classes in label order."""
        return ["background", "building"]

    @property
    def num_classes(self) -> int:
        """Number of classes: background and building."""
        return 2

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Augment training batches (inside a Trainer), then normalize the images.

        Args:
            batch: the batch on the device.
            dataloader_idx: index of the loader (unused).

        Returns:
            The augmented, normalized batch.
        """
        if self.augment and self.trainer is not None and self.trainer.training:
            batch = random_dihedral(batch)
        return self.aug(batch)
