"""Frozen features and embeddings of whole splits, through the model's capabilities."""

from __future__ import annotations

import torch
from lightning import LightningDataModule
from torch import Tensor

from zoo.evaluation.base import Context
from zoo.models.capabilities import ImageFeatures, TextEmbeddings

__all__ = [
    "encode_texts",
    "image_embeddings",
    "num_classes",
    "split_features",
    "train_test_features",
]


@torch.no_grad()
def split_features(ctx: Context, dm: LightningDataModule, split: str) -> tuple[Tensor, Tensor]:
    """Pooled image features ``N×D`` (float32, CPU) and labels ``N`` of a scene split."""
    model: ImageFeatures = ctx.model  # type: ignore[assignment]
    features, labels = [], []
    for batch in ctx.batches(dm, split, f"{split} features"):
        if "label" not in batch:
            raise ValueError(f"{type(dm).__name__} batches carry no 'label': not a scene dataset")
        features.append(model.image_features(batch["image"]).float().cpu())
        labels.append(batch["label"].cpu())
    if not features:
        raise ValueError(f"{type(dm).__name__}: the {split} split is empty")
    return torch.cat(features), torch.cat(labels)


@torch.no_grad()
def image_embeddings(model: TextEmbeddings, image: Tensor) -> Tensor:
    """Unit image embeddings ``B×E`` in the text space (float32, CPU)."""
    return model.encode_image(image).float().cpu()


@torch.no_grad()
def encode_texts(model: TextEmbeddings, texts: list[str], batch_size: int = 256) -> Tensor:
    """Unit text embeddings ``N×E`` (float32, CPU), ``batch_size`` texts at a time."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = model.tokenize(texts[start : start + batch_size])
        out.append(model.encode_text(tokens["input_ids"], tokens["attention_mask"]).float().cpu())
    return torch.cat(out)


def num_classes(dm: LightningDataModule) -> int:
    """The number of scene classes of ``dm`` (its ``class_names``)."""
    names = list(getattr(dm, "class_names", None) or [])
    if len(names) < 2:
        raise ValueError(f"{type(dm).__name__} has no class_names: not a scene dataset")
    return len(names)


def train_test_features(
    ctx: Context, dm: LightningDataModule
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`split_features` of the train and the test split: ``(train_x, train_y, test_x, test_y)``."""
    return (*split_features(ctx, dm, "train"), *split_features(ctx, dm, "test"))
