"""The splice of visual tokens into the text: each sample's ``<image>`` token becomes its ``N``
visual tokens, in one gather (any position, left or right padding), labels -100 on them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["splice_visual_tokens"]


def splice_visual_tokens(
    embeds: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor | None,
    image_token_id: int,
    visual: Tensor,
    image_first: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Replace each sample's single ``<image>`` token by its ``N`` visual tokens.

    With ``image_first`` the ``<image>`` token is dropped and the visual tokens go before the
    whole text instead (after any left padding, before BOS and the system line), as the FUSE
    authors' ``prepare_inputs_labels_for_multimodal`` places them.

    One gather, no loop over samples or tokens. The count of ``<image>`` tokens is not checked
    here (that would copy it from the device at every step): the conversation collate checks
    that each sample has exactly one.

    Args:
        embeds: the text's input embeddings ``B×T×D``.
        input_ids: the token ids ``B×T``.
        attention_mask: ``B×T``, 1 on tokens, 0 on padding.
        labels: ``B×T`` targets (-100 where not scored), or None.
        image_token_id: the ``<image>`` token's id.
        visual: the visual tokens ``B×N×D``.
        image_first: place the visual tokens before the whole text.

    Returns:
        The new embeddings ``B×(T+N-1)×D``, attention mask, labels (-100 on the visual tokens)
        and the visual positions ``B×N``.
    """
    b, t, d = embeds.shape
    n = visual.shape[1]
    is_image = input_ids == image_token_id
    image_at = is_image.float().argmax(dim=1, keepdim=True)  # B×1: the <image> token
    # The visual tokens start at the <image> token, or at the first attended token.
    start = attention_mask.float().argmax(dim=1, keepdim=True) if image_first else image_at
    new = torch.arange(t + n - 1, device=embeds.device).expand(b, -1)
    in_visual = (new >= start) & (new < start + n)
    # The text positions in order with the <image> token left out: q-th of them is q, or q + 1
    # from the <image> token on.
    kept = torch.where(new < start, new, new - n)
    text_index = (kept + (kept >= image_at).long()).clamp(0, t - 1)
    visual_index = (new - start).clamp(0, n - 1)
    out = torch.where(
        in_visual.unsqueeze(-1),
        visual.to(embeds.dtype).gather(1, visual_index.unsqueeze(-1).expand(-1, -1, d)),
        embeds.gather(1, text_index.unsqueeze(-1).expand(-1, -1, d)),
    )
    mask = torch.where(in_visual, 1, attention_mask.gather(1, text_index))
    new_labels = None
    if labels is not None:
        new_labels = torch.where(in_visual, -100, labels.gather(1, text_index))
    positions = start + torch.arange(n, device=embeds.device)
    return out, mask, new_labels, positions
