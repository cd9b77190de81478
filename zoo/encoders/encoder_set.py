"""The encoder-set interface FLAVARS trains through, whatever built its encoders.

An encoder set holds an image encoder, a text encoder, a multimodal (fusion) encoder over both
token sequences, the projections into the shared embedding space, the contrastive logit scale
and the five pretraining heads. Two implement it:

* :class:`zoo.encoders.zoo_encoders.ZooEncoders`: the zoo's own (a timm image encoder, a
  Hugging Face text encoder, :class:`zoo.layers.fusion.FusionEncoder`), random and small by
  default;
* :class:`zoo.encoders.flava.FlavaEncoders`: transformers' FLAVA modules with FLAVA's weights.

The model reads only what this module declares, so it never asks where its encoders came from.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["EncoderSet", "FusedStates", "ImageStates", "TextStates"]


@dataclass
class ImageStates:
    """One pass of an image encoder.

    Attributes:
        pooled: ``B×D`` the image feature (FLAVA: the final [CLS] state).
        patches: ``B×N×D`` the final state of each patch, row-major (the MIM head reads them).
        fusion_input: ``B×S×D`` what the multimodal encoder reads (FLAVA: the last layer's
            states before the final layer norm, [CLS] first).
    """

    pooled: Tensor
    patches: Tensor
    fusion_input: Tensor


@dataclass
class TextStates:
    """One pass of a text encoder.

    Attributes:
        states: ``B×T×D`` final states, [CLS] first (the MLM head reads them).
        fusion_input: ``B×T×D`` what the multimodal encoder reads.
    """

    states: Tensor
    fusion_input: Tensor


@dataclass
class FusedStates:
    """One pass of the multimodal encoder.

    Attributes:
        states: ``B×S×W`` every fused state (the matching head reads them).
        patches: ``B×N×W`` the fused state of each image patch (the MMM image head reads them).
        text: ``B×T×W`` the fused state of each text token (the MMM text head reads them).
    """

    states: Tensor
    patches: Tensor
    text: Tensor


class EncoderSet(nn.Module, ABC):
    """Image, text and multimodal encoders, projections, logit scale and heads, used as one.

    Attributes:
        image_size: the input size in pixels the image encoder is built for.
        in_channels: the bands the image encoder reads (the data's ``num_channels``: where the
            channel count enters FLAVARS; a pretrained RGB stem is adapted by timm's rule).
        patch_size: ``(h, w)`` pixels of one patch.
        grid_size: ``(rows, columns)`` of the patch grid.
        image_width: width of the image encoder's states.
        text_width: width of the text encoder's states.
        fusion_width: width of the multimodal encoder's states.
        embed_dim: width of the shared embedding space.
        image_projection: pooled image feature -> shared space.
        text_projection: text [CLS] state -> shared space.
        logit_scale: the image-text contrastive logit scale (its log; a learnable scalar).
        mim_head: masked image modelling on the image encoder's patch states.
        mmm_image_head: masked multimodal modelling, image half (fused patch states).
        mlm_head: masked language modelling on the text encoder's states.
        mmm_text_head: masked multimodal modelling, text half (fused text states).
    """

    image_size: int
    in_channels: int
    patch_size: tuple[int, int]
    grid_size: tuple[int, int]
    image_width: int
    text_width: int
    fusion_width: int
    embed_dim: int
    image_projection: nn.Module
    text_projection: nn.Module
    logit_scale: Tensor
    mim_head: nn.Module
    mmm_image_head: nn.Module
    mlm_head: nn.Module
    mmm_text_head: nn.Module

    @property
    def num_patches(self) -> int:
        """Patches of one image: ``rows × columns`` of the grid."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    @abstractmethod
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """The ``(mean, std)`` of [0, 1] pixels the encoders were trained with, or None when
        they prescribe none (the data's then holds)."""

    @abstractmethod
    def image(self, image: Tensor, mask: Tensor | None = None) -> ImageStates:
        """One image-encoder pass.

        Args:
            image: ``B×C×H×W`` normalized pixels.
            mask: ``B×N`` bool, the masked patches (masked image modelling), or None.

        Returns:
            The pass's pooled feature, patch states and fusion input.
        """

    @abstractmethod
    def text(self, input_ids: Tensor, attention_mask: Tensor) -> TextStates:
        """One text-encoder pass.

        Args:
            input_ids: ``B×T`` token ids.
            attention_mask: ``B×T`` 1 for a token, 0 for padding.

        Returns:
            The pass's final states and fusion input.
        """

    @abstractmethod
    def project(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Each encoder's fusion input in the fusion width, per row of its pass (the matching
        pairs index them afterwards).

        Args:
            image: ``B×S×D_v`` the image pass's fusion input.
            text: ``B×T×D_t`` the text pass's fusion input.

        Returns:
            ``(B×S×W, B×T×W)``.
        """

    @abstractmethod
    def fuse(self, image: Tensor, text: Tensor, text_mask: Tensor) -> FusedStates:
        """The multimodal encoder over projected sequences (:meth:`project`).

        Args:
            image: ``P×S×W`` the projected image sequences of the fused pairs.
            text: ``P×T×W`` the projected text sequences of the fused pairs.
            text_mask: ``P×T`` the text sequences' attention mask.

        Returns:
            Every fused state and its patch and text parts.
        """

    @abstractmethod
    def itm_logits(self, fused: Tensor) -> Tensor:
        """Image-text matching logits.

        Args:
            fused: ``P×S×W`` the fused states (:attr:`FusedStates.states`).

        Returns:
            ``P×2`` logits, index 1 "matches".
        """

    @abstractmethod
    def dense_encoder(self) -> nn.Module:
        """A copy of the image encoder behind timm's multi-scale interface (UPerNet).

        Returns:
            The copy (training it leaves this set's encoder unchanged).
        """

    @abstractmethod
    def predict_image_targets(self, codes: int | None) -> None:
        """Make :attr:`mim_head` and :attr:`mmm_image_head` predict the masked patches' targets.

        Args:
            codes: the codebook's number of codes (cross-entropy targets), or None for
                normalized pixels (``patch_h × patch_w × 3`` regression targets).
        """
