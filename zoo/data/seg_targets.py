"""The segmentation targets of a referring batch, laid out and checked on the host.

GeoPix decodes one mask per *target*: a segmentation phrase of the answer (``N`` segmentation
tokens) paired with one of the sample's masks. How many targets a batch holds, and where their
tokens are, depends on the data; found on the device (``nonzero``, boolean indexing) it would be
copied to the host at every step. :class:`~zoo.data.referring.ReferringCollate` finds them here
instead, while the batch is still on the host, and adds two tensors whose *shapes* carry the
count:

* ``target_index``: long ``(T,)``, the slot ``b·K + k`` of each target in the ``B×K`` ``mask``,
  ``mask_valid`` and ``category`` (its image is ``target_index // K``);
* ``target_positions``: long ``T×N``, the positions in ``input_ids`` of its phrase's tokens.

The checks the model's forward pass no longer makes are made here, with the same messages: every
phrase is complete, each sample has one phrase per mask, targets point at images of the batch and
categories lie in ``[0, C)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

__all__ = ["check_referring_batch", "phrase_layout", "phrase_token_ids"]

#: Parses :data:`zoo.data.referring.SEG_TOKEN_TEMPLATE`.
_SEG_TOKEN = re.compile(r"\[SEG(\d+)_(\d+)\]")


def phrase_token_ids(tokenizer: PreTrainedTokenizerBase, tokens: Iterable[str]) -> list[int]:
    """The ids of the segmentation tokens among ``tokens`` in the order of a phrase.

    Scale-major: ``[SEG0_0] [SEG0_1] .. [SEG1_0] ..``.

    Args:
        tokenizer: the tokenizer that holds the segmentation tokens.
        tokens: candidate tokens (e.g. the tokenizer's special tokens).

    Returns:
        The ids of the ``[SEGs_k]`` tokens, ordered by scale then index.
    """
    found = [(m, t) for t in tokens if (m := _SEG_TOKEN.fullmatch(t))]
    ordered = sorted(found, key=lambda f: (int(f[0][1]), int(f[0][2])))
    return tokenizer.convert_tokens_to_ids([t for _, t in ordered])


def phrase_layout(
    input_ids: Tensor,
    seg_token_ids: Sequence[int],
    counts: Sequence[int],
    max_targets: int,
    names: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """``target_index`` and ``target_positions`` (see the module docstring) of a batch.

    Args:
        input_ids: long ``B×L`` tokenized conversations (on the host).
        seg_token_ids: the ``N`` segmentation tokens of one phrase.
        counts: the number of masks of each sample.
        max_targets: ``K``, the padded number of targets per sample.
        names: the samples' ids, for the messages.

    Returns:
        ``{"target_index", "target_positions"}``.

    Raises:
        ValueError: a sample holds an incomplete phrase (e.g. cut by the truncation), or not one
            phrase per mask.
    """
    n = len(seg_token_ids)
    is_seg = torch.isin(input_ids, torch.tensor(list(seg_token_ids), dtype=input_ids.dtype))
    index: list[int] = []
    positions: list[Tensor] = []
    for b, (row, count) in enumerate(zip(is_seg, counts, strict=True)):
        name = repr(names[b]) if names is not None else str(b)
        found = row.nonzero().squeeze(1)
        if len(found) % n:
            raise ValueError(
                f"sample {name}: found {len(found)} segmentation tokens, not a multiple of the "
                f"{n} of a target phrase (was a sequence truncated?)"
            )
        phrases = len(found) // n
        if phrases != count:
            raise ValueError(
                f"the answer of sample {name} holds {phrases} segmentation phrases but the batch "
                f"has {count} target masks for it: each target needs one phrase"
            )
        positions.append(found.view(phrases, n))
        index.extend(b * max_targets + k for k in range(count))
    return {
        "target_index": torch.tensor(index, dtype=torch.long),
        "target_positions": torch.cat(positions)
        if positions
        else torch.zeros(0, n, dtype=torch.long),
    }


def check_referring_batch(batch: Mapping[str, Any], num_classes: int | None = None) -> None:
    """Check the targets of a referring batch on the host (the model reads them unchecked).

    ``target_index`` must point at real targets (``mask_valid``) of images of the batch,
    ``target_positions`` inside ``input_ids``, and every real target's category must lie in
    ``[0, num_classes)`` (only ``>= 0`` without ``num_classes``).

    Args:
        batch: the collated referring batch.
        num_classes: the number of categories (None checks only ``>= 0``).

    Raises:
        ValueError: naming the first bad value.
    """
    valid, category = batch["mask_valid"], batch["category"]
    images, k = valid.shape
    index = batch["target_index"]
    if index.numel():
        image = index // k
        lo, hi = int(image.min()), int(image.max())
        if lo < 0 or hi >= images:
            raise ValueError(
                f"target_image values must lie in [0, {images}), got min {lo} and max {hi} "
                f"(from target_index // {k})"
            )
        if not bool(valid.flatten()[index].all()):
            bad = int(index[~valid.flatten()[index]][0])
            raise ValueError(f"target_index {bad} points at a padded target (mask_valid is False)")
    positions = batch["target_positions"]
    length = batch["input_ids"].shape[1]
    if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= length):
        raise ValueError(f"target_positions must lie in [0, {length}), the length of input_ids")
    real = category[valid]
    if real.numel():
        lo, hi = int(real.min()), int(real.max())
        limit = num_classes if num_classes is not None else float("inf")
        if lo < 0 or hi >= limit:
            bad = lo if lo < 0 else hi
            if num_classes is None:
                raise ValueError(f"category {bad} is negative: categories are class indices")
            raise ValueError(
                f"category {bad} is out of range for a memory of {num_classes} classes (the "
                "data's class_names; the model's memory has one entry per class)"
            )
