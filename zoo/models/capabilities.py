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
        """Pooled backbone features.

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            Features ``B×D``.
        """
        ...


@runtime_checkable
class DenseEncoder(Protocol):
    """A copy of the image encoder with timm's multi-scale interface (``feature_info``,
    ``forward_intermediates``, ``prune_intermediate_layers``), for dense heads such as UPerNet;
    a model without it gets its encoder rebuilt from ``vision.name`` and the checkpoint."""

    def dense_encoder(self) -> nn.Module:
        """A copy (never the model's own module) of the image encoder, weights as they are.

        Returns:
            The copy.
        """
        ...


@runtime_checkable
class TextEmbeddings(Protocol):
    """Texts and images embedded in one space (a text encoder beside the image encoder)."""

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Tokenize texts for :meth:`encode_text`.

        Args:
            texts: the texts.

        Returns:
            ``input_ids`` and ``attention_mask`` ``B×L`` on the model's device.
        """
        ...

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Embed texts.

        Args:
            input_ids: token ids ``B×L``.
            attention_mask: ``B×L``.

        Returns:
            Unit text embeddings ``B×E``.
        """
        ...

    def encode_image(self, images: Tensor) -> Tensor:
        """Embed images.

        Args:
            images: normalized images ``B×C×H×W``.

        Returns:
            Unit image embeddings ``B×E``.
        """
        ...


@runtime_checkable
class Generation(Protocol):
    """Text answers to prompts about an image, scored by per-split metrics."""

    #: The metrics of the test loop per split (``"val"``, ``"test"``), or None.
    metrics: nn.ModuleDict | None

    def generate(
        self, image: Tensor, prompt_ids: Tensor, prompt_attention_mask: Tensor
    ) -> list[str]:
        """Answer prompts about images.

        Args:
            image: normalized images ``B×C×H×W``.
            prompt_ids: left-padded prompts ``B×T``.
            prompt_attention_mask: ``B×T``.

        Returns:
            One decoded answer per image of the batch.
        """
        ...

    def generation_metrics(self, question_types: list[str]) -> nn.ModuleDict:
        """Captioning and VQA metrics per split, with VQA accuracy per question type.

        Args:
            question_types: VQA question types reported separately.

        Returns:
            The metrics per split.
        """
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
        """Teacher-forced pass with masks.

        Args:
            batch: the batch (images, and where the phrases are).
            input_ids: token ids ``B×L``.
            attention_mask: ``B×L``.
            labels: ``B×L`` targets, or None.
            category: the memory class of each target ``(T,)``, or None.

        Returns:
            LLM output, mask logits ``T×H×W`` and the image index of each target ``(T,)``.
        """
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
    """A capability and its members in words, for error messages.

    Args:
        capability: one of this module's protocols.

    Returns:
        E.g. ``"a text encoder (TextEmbeddings: tokenize, encode_text, encode_image)"``.
    """
    names = {*vars(capability).get("__annotations__", {}), *vars(capability)}
    members = ", ".join(sorted(name for name in names if not name.startswith("_")))
    meaning = _MEANING.get(capability, capability.__name__)
    return f"{meaning} ({capability.__name__}: {members})"
