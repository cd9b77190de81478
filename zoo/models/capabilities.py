"""What evaluation asks of a model, as structural types.

Each capability is a :class:`typing.Protocol` checked at run time, so an evaluation tests
``isinstance(model, ImageFeatures)`` instead of looking for attribute names, and a model
gains a capability by having the methods, not by inheriting from anything:

=================  ==============================================  =========================
capability         used by                                         models
=================  ==============================================  =========================
ImageFeatures      k-NN, linear probe, UPerNet segmentation        every zoo model
DenseEncoder       UPerNet over the model's own image encoder      FLAVARS (zoo or FLAVA's)
TextEmbeddings     zero-shot classification, image-text retrieval  FLAVARS
Generation         captioning and VQA through the test loop        Aquila, FUSE, GeoPix
Masks              referring segmentation through the test loop    GeoPix
=================  ==============================================  =========================

:func:`describe` names a capability and its members for error messages.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["DenseEncoder", "Generation", "ImageFeatures", "Masks", "TextEmbeddings", "describe"]


@runtime_checkable
class ImageFeatures(Protocol):
    """Pooled features of the image backbone, for frozen-feature probes."""

    def image_features(self, image: Tensor) -> Tensor:
        """Normalized images ``B×C×H×W`` -> pooled backbone features ``B×D``."""
        ...


@runtime_checkable
class DenseEncoder(Protocol):
    """A copy of the image encoder with timm's multi-scale interface (``feature_info``,
    ``forward_intermediates``, ``prune_intermediate_layers``), for dense heads such as UPerNet;
    a model without it gets its encoder rebuilt from ``vision_encoder`` and the checkpoint."""

    def dense_encoder(self) -> nn.Module:
        """A copy (never the model's own module) of the image encoder, weights as they are."""
        ...


@runtime_checkable
class TextEmbeddings(Protocol):
    """Texts and images embedded in one space (a text encoder beside the image encoder)."""

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """``input_ids`` and ``attention_mask`` ``B×L`` on the model's device."""
        ...

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Token ids ``B×L`` -> unit text embeddings ``B×E``."""
        ...

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``B×C×H×W`` -> (pooled features ``B×D``, unit image embeddings ``B×E``)."""
        ...


@runtime_checkable
class Generation(Protocol):
    """Text answers to prompts about an image, scored by per-split metrics."""

    #: The metrics of the test loop per split (``"val"``, ``"test"``), or None.
    metrics: nn.ModuleDict | None

    def generate(
        self, image: Tensor, prompt_ids: Tensor, prompt_attention_mask: Tensor
    ) -> list[str]:
        """One decoded answer per image of the batch."""
        ...

    def generation_metrics(self, question_types: list[str]) -> nn.ModuleDict:
        """Captioning and VQA metrics per split, with VQA accuracy per question type."""
        ...


@runtime_checkable
class Masks(Protocol):
    """Segmentation masks decoded from the answer's segmentation tokens."""

    def forward_with_masks(
        self,
        batch: dict[str, Any],
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None,
        category: Tensor | None,
    ) -> tuple[Any, Tensor, Tensor]:
        """(LLM output, mask logits ``T×H×W``, image index of each target ``T``)."""
        ...


#: What each capability means, for the error that says a model lacks it.
_MEANING = {
    ImageFeatures: "an image encoder",
    DenseEncoder: "an image encoder for dense heads",
    TextEmbeddings: "a text encoder",
    Generation: "a text generator",
    Masks: "a mask decoder",
}


def describe(capability: type) -> str:
    """``"a text encoder (TextEmbeddings: tokenize, encode_text, encode_image)"``."""
    names = {*vars(capability).get("__annotations__", {}), *vars(capability)}
    members = ", ".join(sorted(name for name in names if not name.startswith("_")))
    meaning = _MEANING.get(capability, capability.__name__)
    return f"{meaning} ({capability.__name__}: {members})"
