"""Datasets, datamodules, tokenization and the embedded-dataset generator.

The datamodules import torchgeo; they load lazily so that ``zoo.data.tokenize`` and
``zoo.data.embedded`` stay usable on a machine without it (e.g. a bare GPU benchmark box).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ConversationDataModule": "zoo.data.datamodules",
    "ConversationDataset": "zoo.data.conversations",
    "EmbeddedConversationDataModule": "zoo.data.datamodules",
    "EmbeddedDataModule": "zoo.data.datamodules",
    "EmbeddedReferringDataModule": "zoo.data.coco_refs",
    "ReferringCollate": "zoo.data.referring",
    "ReferringSegmentationDataModule": "zoo.data.coco_refs",
    "ReferringSegmentationDataset": "zoo.data.coco_refs",
    "ImageTextLocationDataModule": "zoo.data.datamodules",
    "ImageTextLocationDataset": "zoo.data.image_text",
    "ReferringDataset": "zoo.data.referring",
    "CocoReferringDataset": "zoo.data.coco_refs",
    "CocoRefsDataModule": "zoo.data.coco_refs",
    "RRSISDDataset": "zoo.data.referring_benchmarks",
    "RRSISDDataModule": "zoo.data.referring_benchmarks",
    "RefSegRSDataset": "zoo.data.referring_benchmarks",
    "RefSegRSDataModule": "zoo.data.referring_benchmarks",
    "EuroSATScenesDataModule": "zoo.data.scenes",
    "RESISC45ScenesDataModule": "zoo.data.scenes",
    "UCMercedScenesDataModule": "zoo.data.scenes",
    "PatternNetScenesDataModule": "zoo.data.scenes",
    "SpaceNet1SegmentationDataModule": "zoo.data.spacenet",
    "SkyScriptDataModule": "zoo.data.skyscript",
    "SkyScriptDataset": "zoo.data.skyscript",
    "CaptionDataset": "zoo.data.captions",
    "CaptionDataModule": "zoo.data.captions",
    "CaptionConversationDataModule": "zoo.data.captions",
    "RSVQADataset": "zoo.data.rsvqa",
    "RSVQADataModule": "zoo.data.rsvqa",
    "ImageFolderDataModule": "zoo.data.images",
    "ImageFolderDataset": "zoo.data.images",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    """Import a datamodule or dataset on first use (PEP 562), so torchgeo loads only when needed.

    Args:
        name: the attribute asked for.

    Returns:
        The class named in ``_LAZY``.

    Raises:
        AttributeError: ``name`` is not one of the package's exports.
    """
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo.data' has no attribute {name!r}")
