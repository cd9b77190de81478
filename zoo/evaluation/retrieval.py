"""Image-text retrieval with several captions per image (RSICD, UCM-Captions, Sydney-Captions).

The caption benchmarks pair every image with five captions. The standard protocol (VSE++, and
every remote-sensing retrieval paper since, e.g. Yuan et al.'s AMFMN on RSICD/RSITMD):

* image -> text R@k: the fraction of images with *any* of their captions among the ``k`` captions
  most similar to the image;
* text -> image R@k: the fraction of captions whose image is among the ``k`` most similar images;
* mean recall (mR): the average of all the R@k values of both directions (six with the default
  ``ks = (1, 5, 10)``).

Similarity is cosine; ties are resolved optimiztically: the rank of a target is ``1 + #candidates
with strictly greater similarity``. Both directions are
:func:`zoo.metrics.embedding.retrieval_ranks` with caption groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from zoo.metrics.embedding import retrieval_ranks

__all__ = ["caption_retrieval", "caption_retrieval_ranks"]


def caption_retrieval_ranks(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    text_to_image: Tensor,
    chunk_size: int = 1024,
) -> tuple[Tensor, Tensor]:
    """1-based ranks of the best-ranked own caption per image and of the own image per caption.

    Args:
        image_embeddings: ``N×D`` image embeddings (normalized inside).
        text_embeddings: ``M×D`` caption embeddings (normalized inside).
        text_to_image: ``M`` long, the index in ``[0, N)`` of each caption's image; every image
            needs at least one caption.
        chunk_size: rows of the similarity matrix materialized at once (``chunk_size×M`` and
            ``chunk_size×N``, never ``N×M``).

    Returns:
        ``(image_ranks N, text_ranks M)``, long tensors.
    """
    if image_embeddings.ndim != 2 or text_embeddings.ndim != 2:
        raise ValueError(
            "image_embeddings and text_embeddings must have shape N×D and M×D, got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            f"image_embeddings and text_embeddings differ in width: {image_embeddings.shape[1]} "
            f"and {text_embeddings.shape[1]}"
        )
    n, m = len(image_embeddings), len(text_embeddings)
    if n == 0 or m == 0:
        raise ValueError(f"need at least one image and one caption, got {n} and {m}")
    if text_to_image.shape != (m,) or text_to_image.is_floating_point():
        raise ValueError(
            f"text_to_image must be an integer tensor of shape [{m}] (one image index per "
            f"caption), got {text_to_image.dtype} {tuple(text_to_image.shape)}"
        )
    device = image_embeddings.device
    owner = text_to_image.to(device).long()
    if int(owner.min()) < 0 or int(owner.max()) >= n:
        raise ValueError(
            f"text_to_image must lie in [0, {n}) (image indices), got values in "
            f"[{int(owner.min())}, {int(owner.max())}]"
        )
    captions_per_image = torch.bincount(owner, minlength=n)
    if bool((captions_per_image == 0).any()):
        missing = torch.nonzero(captions_per_image == 0).flatten()[:10].tolist()
        raise ValueError(f"every image needs at least one caption; images without: {missing} ...")
    images = torch.arange(n, device=device)
    image_ranks = retrieval_ranks(image_embeddings, text_embeddings, chunk_size, images, owner)
    text_ranks = retrieval_ranks(text_embeddings, image_embeddings, chunk_size, owner, images)
    return image_ranks, text_ranks


def caption_retrieval(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    text_to_image: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k of multi-caption image-text retrieval in both directions, and mean recall.

    Args:
        image_embeddings: ``N×D`` image embeddings (normalized inside).
        text_embeddings: ``M×D`` caption embeddings (normalized inside), e.g. ``M = 5 N``.
        text_to_image: ``M`` long, the image index of each caption.
        ks: recall cut-offs.
        chunk_size: similarity rows materialized at once.

    Returns:
        ``image_to_text_R@{k}`` and ``text_to_image_R@{k}`` for each ``k`` (fractions in
        ``[0, 1]``) and ``mean_recall``, their average.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive integers, got {ks}")
    image_ranks, text_ranks = caption_retrieval_ranks(
        image_embeddings, text_embeddings, text_to_image, chunk_size
    )
    out: dict[str, float] = {}
    for name, ranks in (("image_to_text", image_ranks), ("text_to_image", text_ranks)):
        for k in ks:
            out[f"{name}_R@{k}"] = (ranks <= k).double().mean().item()
    out["mean_recall"] = sum(out.values()) / len(out)
    return out
