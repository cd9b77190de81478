"""Fixtures of the generator tests: a small embedded conversation dataset (``dm``) and a
validation batch of it (``batch``); test modules with other data override ``dm`` (with
:func:`prepared`) and ``batch`` follows."""

from __future__ import annotations

from typing import TypeVar

import pytest
import torch
from lightning.pytorch import LightningDataModule

from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.models import Aquila

DataModule = TypeVar("DataModule", bound=LightningDataModule)


def prepared(dm: DataModule) -> DataModule:
    """``dm`` with its data written and set up for fitting."""
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="package")
def dm(tmp_path_factory) -> EmbeddedConversationDataModule:
    root = tmp_path_factory.getbasetemp() / "embedded"
    return prepared(
        EmbeddedConversationDataModule(str(root), splits=EmbeddedSplits(24, 8, 8), batch_size=4)
    )


@pytest.fixture(scope="module")  # per module: a module may override dm
def batch(dm) -> dict:
    return dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)


def make_aquila(dm: EmbeddedConversationDataModule, **kwargs) -> Aquila:
    """A tiny Aquila on the data's tokenizer, seeded, in eval mode."""
    torch.manual_seed(0)
    return Aquila(tokenizer=dm.tokenizer, class_names=dm.class_names, **kwargs).eval()
