"""FLAVA's multimodal parts for the zoo's own encoders: the fusion transformer over image and
text tokens, the image-text matching head and the masked-prediction head."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["FusionEncoder", "FusionLayer", "MatchingHead", "prediction_head"]


class FusionLayer(nn.Module):
    """A pre-norm transformer layer (GELU, no dropout) with ``nn.TransformerEncoderLayer``'s
    parameters and names, run batch first: one fused q/k/v product viewed as ``B×H×S×D`` for
    ``scaled_dot_product_attention``, where ``nn.MultiheadAttention`` would copy its input and
    its packed projections into sequence-first layouts (an eighth of a FLAVARS step on a CPU).

    Args:
        width: The width of the tokens.
        heads: The number of attention heads.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.linear1 = nn.Linear(width, 4 * width)
        self.linear2 = nn.Linear(4 * width, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)

    def forward(self, x: Tensor, keep: Tensor) -> Tensor:
        """One pre-norm self-attention and feed-forward step.

        Args:
            x: The tokens, ``B×S×W``.
            keep: Boolean ``B×1×1×S``, True on the keys that may be attended.

        Returns:
            The updated tokens, ``B×S×W``.
        """
        b, s, w = x.shape
        heads = self.self_attn.num_heads
        qkv = F.linear(self.norm1(x), self.self_attn.in_proj_weight, self.self_attn.in_proj_bias)
        q, k, v = qkv.view(b, s, 3, heads, w // heads).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = x + self.self_attn.out_proj(attended.transpose(1, 2).reshape(b, s, w))
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class FusionEncoder(nn.Module):
    """FLAVA's multimodal encoder for the zoo's encoders: a transformer over [CLS] + image
    tokens + text tokens, returning every state ``B×(1+N+T)×width``. Its parameters are named
    as an ``nn.TransformerEncoder`` of pre-norm GELU layers (``encoder.layers.<i>``), whose
    outputs its :class:`FusionLayer` s reproduce.

    Args:
        image_width: The width of the image encoder's tokens.
        text_width: The width of the text encoder's tokens.
        width: The width of the fusion transformer.
        layers: The number of fusion layers.
        heads: The number of attention heads per layer.
    """

    def __init__(
        self, image_width: int, text_width: int, width: int, layers: int, heads: int
    ) -> None:
        super().__init__()
        self.image_in = nn.Linear(image_width, width)
        self.text_in = nn.Linear(text_width, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.modality_token = nn.Parameter(torch.zeros(2, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.modality_token, std=0.02)
        self.encoder = nn.ModuleDict(
            {"layers": nn.ModuleList(FusionLayer(width, heads) for _ in range(layers))}
        )
        self.norm = nn.LayerNorm(width)

    def project(self, image_tokens: Tensor, text_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Each modality's ``B×N×D_v`` / ``B×T×D_t`` states into the fusion width, its modality
        token added: per row of its own encoder pass, so that the matching pairs index them
        afterwards (:meth:`encode`) instead of projecting gathered copies.

        Args:
            image_tokens: The image encoder's states, ``B×N×D_v``.
            text_tokens: The text encoder's states, ``B×T×D_t``.

        Returns:
            The projected image and text tokens, ``B×N×width`` and ``B×T×width``.
        """
        return (
            self.image_in(image_tokens) + self.modality_token[0],
            self.text_in(text_tokens) + self.modality_token[1],
        )

    def encode(self, image: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """All fused states of projected tokens (:meth:`project`).

        Args:
            image: The projected image tokens, ``B×N×width``.
            text: The projected text tokens, ``B×T×width``.
            text_mask: ``B×T``, 1 on the real text tokens.

        Returns:
            The fused states ``B×(1+N+T)×width``: [CLS], the N image tokens, the T text tokens.
        """
        b, n = image.shape[:2]
        x = torch.cat([self.cls_token.expand(b, -1, -1), image, text], dim=1)
        keep = torch.cat([text_mask.new_ones(b, 1 + n), text_mask], dim=1).bool()[:, None, None, :]
        for layer in self.encoder["layers"]:
            x = layer(x, keep)
        return self.norm(x)

    def forward(self, image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """:meth:`encode` of :meth:`project`: the fused states of each image with its text.

        Args:
            image_tokens: The image encoder's states, ``B×N×D_v``.
            text_tokens: The text encoder's states, ``B×T×D_t``.
            text_mask: ``B×T``, 1 on the real text tokens.

        Returns:
            The fused states, ``B×(1+N+T)×width``.
        """
        return self.encode(*self.project(image_tokens, text_tokens), text_mask)


class MatchingHead(nn.Module):
    """FLAVA's ITM head: a tanh pooler on the fused [CLS] state, then two logits.

    Args:
        width: The width of the fused states.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.pooler = nn.Linear(width, width)
        self.classifier = nn.Linear(width, 2)

    def forward(self, fused: Tensor) -> Tensor:
        """The image-text matching logits of fused states.

        Args:
            fused: The fused states, ``B×S×width`` ([CLS] first).

        Returns:
            The logits ``B×2`` (index 1: the text matches the image).
        """
        return self.classifier(torch.tanh(self.pooler(fused[:, 0])))


def prediction_head(width: int, outputs: int) -> nn.Sequential:
    """BERT's / FLAVA's masked-prediction head: dense, GELU, layer norm, decoder.

    Args:
        width: The width of the states it reads.
        outputs: The number of outputs (the vocabulary, or the image codebook).

    Returns:
        The head.
    """
    return nn.Sequential(
        nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, outputs)
    )
