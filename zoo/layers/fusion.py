"""FLAVA's multimodal parts for the zoo's own encoders: the fusion transformer over image and
text tokens, the image-text matching head and the masked-prediction head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FusionEncoder", "MatchingHead", "prediction_head"]


class FusionEncoder(nn.Module):
    """FLAVA's multimodal encoder for the zoo's encoders: a transformer over [CLS] + image
    tokens + text tokens, returning every state ``B×(1+N+T)×width``."""

    def __init__(self, image_width: int, text_width: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.image_in = nn.Linear(image_width, width)
        self.text_in = nn.Linear(text_width, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.modality_token = nn.Parameter(torch.zeros(2, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.modality_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def project(self, image_tokens: Tensor, text_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Each modality's ``B×N×D_v`` / ``B×T×D_t`` states into the fusion width, its modality
        token added: per row of its own encoder pass, so that the matching pairs index them
        afterwards (:meth:`encode`) instead of projecting gathered copies."""
        return (
            self.image_in(image_tokens) + self.modality_token[0],
            self.text_in(text_tokens) + self.modality_token[1],
        )

    def encode(self, image: Tensor, text: Tensor, text_mask: Tensor) -> Tensor:
        """All fused states ``B×(1+N+T)×width`` of projected tokens (:meth:`project`): [CLS], the
        N image tokens, the T text tokens; ``text_mask`` is 1 on real tokens."""
        b, n = image.shape[:2]
        x = torch.cat([self.cls_token.expand(b, -1, -1), image, text], dim=1)
        pad = torch.cat([text_mask.new_ones(b, 1 + n), text_mask], dim=1) == 0
        return self.norm(self.encoder(x, src_key_padding_mask=pad))

    def forward(self, image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """:meth:`encode` of :meth:`project`: the fused states of each image with its text."""
        return self.encode(*self.project(image_tokens, text_tokens), text_mask)


class MatchingHead(nn.Module):
    """FLAVA's ITM head: a tanh pooler on the fused [CLS] state, then two logits."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.pooler = nn.Linear(width, width)
        self.classifier = nn.Linear(width, 2)

    def forward(self, fused: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.pooler(fused[:, 0])))


def prediction_head(width: int, outputs: int) -> nn.Sequential:
    """BERT's / FLAVA's masked-prediction head: dense, GELU, layer norm, decoder."""
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, outputs))
