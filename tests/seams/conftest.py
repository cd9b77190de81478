"""Fixtures of the seam tests: small embedded datasets of each kind and one batch of each, as
the models receive them (after ``on_after_batch_transfer``)."""

from __future__ import annotations

import pytest

from tests.models.conftest import prepared
from zoo.data import EmbeddedConversationDataModule, EmbeddedDataModule
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.datamodules import EmbeddedSplits


def first_batch(dm, split: str = "val") -> dict:
    """The first batch of ``split`` (validation: a fixed order), on the model's side."""
    loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
    return dm.on_after_batch_transfer(next(iter(loader)), 0)


@pytest.fixture(scope="package")
def conversation_dm(tmp_path_factory) -> EmbeddedConversationDataModule:
    root = tmp_path_factory.mktemp("conversations")
    return prepared(
        EmbeddedConversationDataModule(str(root), splits=EmbeddedSplits(8, 8, 8), batch_size=4)
    )


@pytest.fixture(scope="package")
def conversation_batch(conversation_dm) -> dict:
    return first_batch(conversation_dm)


@pytest.fixture(scope="package")
def referring_dm(tmp_path_factory) -> EmbeddedReferringDataModule:
    root = tmp_path_factory.mktemp("referring")
    return prepared(
        EmbeddedReferringDataModule(str(root), splits=EmbeddedSplits(8, 8, 8), batch_size=4)
    )


@pytest.fixture(scope="package")
def referring_batch(referring_dm) -> dict:
    return first_batch(referring_dm)


@pytest.fixture(scope="package")
def image_text_dm(tmp_path_factory) -> EmbeddedDataModule:
    root = tmp_path_factory.mktemp("image_text")
    return prepared(
        EmbeddedDataModule(
            str(root), splits=EmbeddedSplits(32, 16, 8), image_size=32, batch_size=16
        )
    )
