"""The zoo's own encoder set, and the one place that picks between it and FLAVA's.

:class:`ZooEncoders` is a timm image encoder (:class:`~zoo.encoders.vision.VisionEncoder`), a
Hugging Face text encoder (:class:`~zoo.encoders.text.TextEncoder`), the zoo's multimodal
:class:`~zoo.layers.fusion.FusionEncoder`, linear projections and FLAVA-style heads, behind
:class:`~zoo.encoders.encoder_set.EncoderSet`. :func:`build_encoder_set` gives it, or
:class:`~zoo.encoders.flava.FlavaEncoders` when a FLAVA folder is named.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import Tensor, nn

from zoo.encoders.encoder_set import EncoderSet, FusedStates, ImageStates, TextStates
from zoo.encoders.flava import FlavaEncoders, FlavaSpec
from zoo.encoders.text import TextEncoder, TextSpec
from zoo.encoders.vision import VisionEncoder, VisionSpec
from zoo.layers.attention import dense_attention_mask
from zoo.layers.fusion import FusionEncoder, MatchingHead, prediction_head
from zoo.losses.contrastive import init_logit_scale

__all__ = ["FusionSpec", "ZooEncoders", "build_encoder_set"]


@dataclass
class FusionSpec:
    """The zoo's multimodal fusion encoder (``fusion:`` in a config; FLAVA brings its own).

    Args:
        width: width of the fused states.
        layers: transformer layers.
        heads: attention heads.
    """

    width: int = 128
    layers: int = 2
    heads: int = 4


class ZooEncoders(EncoderSet):
    """The zoo's encoders as one encoder set.

    Args:
        vision: the image encoder.
        text: the text encoder.
        fusion: the multimodal encoder's size.
        vocab_size: the data tokenizer's length (text embedding table, MLM outputs).
        image_size: input size in pixels.
        embed_dim: width of the shared embedding space.
        temperature: initial contrastive temperature (logit scale ln(1/T)).
        in_channels: the bands the image encoder reads (timm's ``in_chans``: a pretrained stem
            is adapted by timm's rule).

    The heads predict pixels until :meth:`predict_image_targets` says codes.
    """

    def __init__(
        self,
        vision: VisionSpec,
        text: TextSpec,
        fusion: FusionSpec,
        vocab_size: int,
        image_size: int,
        embed_dim: int,
        temperature: float,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.vision_encoder = VisionEncoder(
            vision.name, image_size, vision.pretrained, vision.checkpoint, in_channels
        )
        self.in_channels = in_channels
        self.text_encoder = TextEncoder(text.name, vocab_size, pretrained=text.pretrained)
        vw, tw = self.vision_encoder.width, self.text_encoder.width
        self.image_size = image_size
        self.patch_size = self.vision_encoder.patch_size
        self.grid_size = self.vision_encoder.grid_size
        self.image_width, self.text_width = vw, tw
        self.fusion_width, self.embed_dim = fusion.width, embed_dim
        self.image_projection = nn.Linear(vw, embed_dim)
        self.text_projection = nn.Linear(tw, embed_dim)
        self.logit_scale = init_logit_scale(temperature)
        self.fusion = FusionEncoder(vw, tw, fusion.width, fusion.layers, fusion.heads)
        self.itm_head = MatchingHead(fusion.width)
        self.mlm_head = prediction_head(tw, vocab_size)
        self.mmm_text_head = prediction_head(fusion.width, vocab_size)

    @property
    def normalization(self) -> None:
        """None: the zoo's encoders prescribe no normalization (the data's holds)."""
        return None

    def image(self, image: Tensor, mask: Tensor | None = None) -> ImageStates:
        """One pass of the timm image encoder.

        Args:
            image: ``B×C×H×W`` normalized pixels.
            mask: ``B×N`` bool, the masked patches, or None.

        Returns:
            The pooled feature; the patch tokens as both patch states and fusion input.
        """
        out = self.vision_encoder(image, mask)
        return ImageStates(out.pooled, out.tokens, out.tokens)

    def text(self, input_ids: Tensor, attention_mask: Tensor) -> TextStates:
        """One pass of the text encoder, given the 4-D attention mask built here: with the
        ``B×T`` one, Hugging Face checks ``mask.all()`` on the host at every step.

        Args:
            input_ids: ``B×T`` token ids.
            attention_mask: ``B×T`` 1 for a token, 0 for padding.

        Returns:
            The final states as both states and fusion input.
        """
        model = self.text_encoder.model
        mask = dense_attention_mask(
            attention_mask, model.config._attn_implementation, causal=False, dtype=model.dtype
        )
        states = self.text_encoder(input_ids, mask)
        return TextStates(states, states)

    def project(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """The fusion encoder's input projections (modality tokens added), per row.

        Args:
            image: ``B×N×D_v`` patch tokens.
            text: ``B×T×D_t`` text states.

        Returns:
            ``(B×N×W, B×T×W)``.
        """
        return self.fusion.project(image, text)

    def fuse(self, image: Tensor, text: Tensor, text_mask: Tensor) -> FusedStates:
        """The fusion encoder over projected sequences: [CLS], the N patches, the T tokens.

        Args:
            image: ``P×N×W`` projected patch tokens.
            text: ``P×T×W`` projected text states.
            text_mask: ``P×T`` the text sequences' attention mask.

        Returns:
            The ``P×(1+N+T)×W`` states and their patch and text parts.
        """
        fused = self.fusion.encode(image, text, text_mask)
        n = image.shape[1]
        return FusedStates(fused, fused[:, 1 : 1 + n], fused[:, 1 + n :])

    def itm_logits(self, fused: Tensor) -> Tensor:
        """Matching logits from the fused [CLS] state.

        Args:
            fused: ``P×S×W`` the fused states.

        Returns:
            ``P×2`` logits.
        """
        return self.itm_head(fused)

    def dense_encoder(self) -> nn.Module:
        """A copy of the timm image model (its own multi-scale interface).

        Returns:
            The copy.
        """
        return copy.deepcopy(self.vision_encoder.model)

    def predict_image_targets(self, codes: int | None) -> None:
        """New MIM / MMM-image heads: BERT-style prediction heads over the codebook's codes, or
        linear heads onto a patch's pixels.

        Args:
            codes: the codebook's number of codes, or None for pixel targets.
        """
        if codes is None:
            pixels = self.patch_size[0] * self.patch_size[1] * self.in_channels
            self.mim_head = nn.Linear(self.image_width, pixels)
            self.mmm_image_head = nn.Linear(self.fusion_width, pixels)
        else:
            self.mim_head = prediction_head(self.image_width, codes)
            self.mmm_image_head = prediction_head(self.fusion_width, codes)


def build_encoder_set(
    flava: FlavaSpec,
    vision: VisionSpec,
    text: TextSpec,
    fusion: FusionSpec,
    vocab_size: int,
    image_size: int,
    embed_dim: int,
    temperature: float,
    in_channels: int = 3,
) -> EncoderSet:
    """FLAVA's encoders when ``flava.folder`` is given, else the zoo's.

    Args:
        flava: the FLAVA folder (or None in it).
        vision: the zoo's image encoder (unused with FLAVA).
        text: the zoo's text encoder (unused with FLAVA).
        fusion: the zoo's fusion encoder (unused with FLAVA).
        vocab_size: the data tokenizer's length.
        image_size: the data's image size (FLAVA's must agree).
        embed_dim: the shared space's width (FLAVA keeps its own).
        temperature: initial contrastive temperature (FLAVA keeps its own logit scale).
        in_channels: the bands the data reads (the image encoder's stem is adapted to them).

    Returns:
        The encoder set.
    """
    if flava.folder is not None:
        return FlavaEncoders(
            flava.folder, vocab_size=vocab_size, image_size=image_size, in_channels=in_channels
        )
    return ZooEncoders(
        vision, text, fusion, vocab_size, image_size, embed_dim, temperature, in_channels
    )
