"""The batch contract as types: what the datamodules return and the models read.

One dict per batch, the same key for the same meaning everywhere (torchgeo's names where
torchgeo has them); ``docs/architecture.md`` explains each. Keys marked ``NotRequired`` are
present only where the data has them (e.g. ``location`` only with coordinates). Shapes use
``B`` (batch), ``T`` (tokens), ``K`` (targets per sample), ``C×H×W`` (bands and pixels).

Models are usable from plain PyTorch: build one of these dicts and call ``training_step``.
"""

from __future__ import annotations

from typing import Any, TypedDict

from torch import Tensor

try:  # Python 3.11+
    from typing import NotRequired
except ImportError:  # pragma: no cover (Python 3.10)
    from typing_extensions import NotRequired

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ConversationBatch",
    "ImageBatch",
    "ImageTextBatch",
    "InstancesBatch",
    "ReferringBatch",
    "SceneBatch",
    "SegmentationBatch",
]


#: The default normalization of ``image`` on the device: per-band mean and standard deviation
#: of [0, 1] pixels (ImageNet's); a datamodule's ``mean`` / ``std`` replace them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageBatch(TypedDict):
    """What every batch has (and, from an image folder, where each image comes from)."""

    #: float ``B×C×H×W``: pixels in [0, 255] from the loader, normalized on the device.
    image: Tensor
    #: the image files, relative to the folder (:mod:`zoo.data.images`).
    path: NotRequired[list[str]]
    #: per sample ``{"index", "count", "window": [row, col, height, width], "height",
    #: "width", "valid_fraction"}``: the chip's place in its file (source pixels).
    chip: NotRequired[list[dict[str, Any]]]
    #: per sample its georeferencing, or None: ``{"lat", "lon"}`` of the centre with either
    #: ``"gsd_m"`` (nominal, the embedded data) or ``"crs"`` (WKT), ``"transform"`` (six affine
    #: coefficients of the model-input pixel grid) and ``"footprint"`` (GeoJSON, EPSG:4326).
    geo: NotRequired[list[dict[str, Any] | None]]


class ImageTextBatch(ImageBatch):
    """Image-caption(-location) pairs (SkyScript CSV, caption benchmarks): FLAVARS."""

    #: the raw captions, before tokenizing.
    caption: list[str]
    #: long ``B×T``: the tokenized captions (right-padded).
    input_ids: Tensor
    #: long ``B×T``: 1 on real tokens, 0 on padding.
    attention_mask: Tensor
    #: float ``B×2``: (lat, lon) in degrees, lat in [-90, 90], lon in [-180, 180].
    location: NotRequired[Tensor]
    #: long ``B``: scene class.
    label: NotRequired[Tensor]
    #: all reference captions of each image (caption benchmarks).
    references: NotRequired[list[list[str]]]
    #: the dataset's image ids (caption benchmarks).
    image_id: NotRequired[list[str]]
    #: long ``B``: row of the sample in its table.
    index: NotRequired[Tensor]


class SceneBatch(ImageBatch):
    """Scene classification (EuroSAT, RESISC45, UC Merced, PatternNet): evaluation."""

    #: long ``B``: scene class.
    label: Tensor


class SegmentationBatch(ImageBatch):
    """Semantic segmentation (SpaceNet 1): evaluation."""

    #: long ``B×H×W``: class per pixel (0 background).
    semantic_mask: Tensor


class InstancesBatch(ImageBatch):
    """Images with their annotated objects (COCO instances): the hallucination protocol."""

    #: long ``B``: the image's position in its split.
    index: Tensor
    #: per sample its objects, each ``{"category": name, "colour": str | None, "cell": 3×3
    #: cell name}`` (:mod:`zoo.data.coco_instances`).
    instances: list[list[dict[str, Any]]]


class ConversationBatch(ImageBatch):
    """LLaVA-format conversations, one ``<image>`` token per sample: the generators."""

    #: long ``B×T``: the whole conversation, right-padded.
    input_ids: Tensor
    #: long ``B×T``: 1 on real tokens.
    attention_mask: Tensor
    #: long ``B×T``: the targets; -100 outside the answers.
    labels: Tensor
    #: long ``B×T'``: the first question as a generation prompt, left-padded.
    prompt_ids: Tensor
    #: long ``B×T'``: 1 on the prompt's real tokens.
    prompt_attention_mask: Tensor
    #: the first question, without the ``<image>`` token.
    question: list[str]
    #: its answer.
    reference: list[str]
    #: every reference answer (several captions per image in the caption benchmarks).
    references: list[list[str]]
    #: sample ids.
    id: list[str]
    #: ``caption``, ``vqa``, ``referring`` ... (selects the metrics).
    task: list[str]
    #: the VQA question type (``presence``, ``count`` ...), empty where there is none.
    question_type: NotRequired[list[str]]
    #: float ``B×2``: (lat, lon) in degrees, where the records have coordinates (``location``
    #: or ``lat``/``lon``); what a generator's location token reads.
    location: NotRequired[Tensor]


class ReferringBatch(ConversationBatch):
    """Referring segmentation conversations: GeoPix."""

    #: float ``B×K×H×W``: target masks in {0, 1}, padded to ``K`` targets.
    mask: Tensor
    #: bool ``B×K``: which of the ``K`` targets are real.
    mask_valid: Tensor
    #: long ``B×K``: each target's category (-1 on padding).
    category: Tensor
    #: the referring expressions of each sample.
    sentences: list[list[str]]
    #: long ``T``: the slot ``b·K + k`` in ``mask`` of each of the batch's ``T`` targets (laid
    #: out by the collate on the host, so the model never counts targets on the device).
    target_index: Tensor
    #: long ``T×N``: the positions in ``input_ids`` of each target's ``N`` segmentation tokens.
    target_positions: Tensor
    #: per sample, bool ``K_i×H_i×W_i``: its targets' masks at the image's original resolution
    #: (evaluation with ``original_resolution``; the IoU is computed there).
    mask_original: NotRequired[list[Tensor]]
