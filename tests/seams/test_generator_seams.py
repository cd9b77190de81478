"""Seams of the generator core: the data's labels -> the splice -> the LLM's loss, and the
training stage -> peft's LoRA adapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.encoders.llm import decoder_layers
from zoo.models import FUSE, Aquila, TrainingStage
from zoo.models.generator import VisionLanguageGenerator


def _spliced_labels(model: VisionLanguageGenerator, batch: dict, n: int) -> Tensor:
    """The data's labels with the ``<image>`` token replaced by ``n`` ignored positions, one
    sample at a time."""
    rows = []
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        (where,) = (ids == model.image_token_id).nonzero(as_tuple=True)
        p = int(where[0])
        rows.append(torch.cat([labels[:p], torch.full((n,), -100), labels[p + 1 :]]))
    return torch.stack(rows)


@pytest.mark.parametrize("family", [FUSE, Aquila])
def test_loss_is_next_token_cross_entropy_on_the_answers(
    conversation_dm, conversation_batch, family
):
    """The training loss is the mean cross-entropy of the logits at position ``k`` against the
    label at ``k + 1``, over the answer tokens only (the data's labels, -100 on the visual
    tokens): labels shifted by one more, or left on the image, change it."""
    torch.manual_seed(0)
    model = family(
        tokenizer=conversation_dm.tokenizer, class_names=conversation_dm.class_names
    ).eval()
    batch = conversation_batch
    with torch.no_grad():
        out = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        n = model.visual_tokens(batch["image"])[0].shape[1]
    labels = _spliced_labels(model, batch, n)
    assert (labels != -100).sum() > 0
    want = F.cross_entropy(
        out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )
    torch.testing.assert_close(out.loss.float(), want, rtol=1e-5, atol=1e-6)
    # the answers are what the data labelled: every labelled token is an attended real token
    assert ((batch["labels"] != -100) <= (batch["attention_mask"] == 1)).all()


def test_lora_adapts_every_target_module_of_every_layer_and_nothing_else(conversation_dm):
    """``stage.lora_target_modules`` reach peft whole: each decoder layer's named projections get
    an adapter, no other module does."""
    targets = ["q_proj", "v_proj", "down_proj"]
    torch.manual_seed(0)
    model = FUSE(
        tokenizer=conversation_dm.tokenizer,
        class_names=conversation_dm.class_names,
        stage=TrainingStage(lora_rank=2, lora_alpha=4, lora_target_modules=targets),
    )
    adapted = {
        name.removesuffix(".lora_A")
        for name, _ in model.llm.named_modules()
        if name.endswith(".lora_A")
    }
    layers = decoder_layers(model.llm)
    want = set()
    for i, layer in enumerate(layers):
        for name, module in layer.named_modules():
            if name.rsplit(".", 1)[-1] in targets:
                assert hasattr(module, "lora_A"), f"layer {i}: {name} has no LoRA adapter"
                want.add(name)
    assert len(adapted) == len(layers) * len(targets) == len(want) * len(layers)
    trainable = {n for n, p in model.llm.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)


@pytest.mark.parametrize("family", [FUSE, Aquila])
def test_the_text_after_the_image_attends_to_it(conversation_dm, conversation_batch, family):
    """Every text position after ``<image>`` sees the visual tokens: another image changes the
    logits at each answer position (visual tokens left out of the attention mask would leave
    them unchanged), and the text before ``<image>`` cannot see it (causal attention)."""
    torch.manual_seed(0)
    model = family(
        tokenizer=conversation_dm.tokenizer, class_names=conversation_dm.class_names
    ).eval()
    batch = conversation_batch
    with torch.no_grad():
        n = model.visual_tokens(batch["image"])[0].shape[1]
        logits = model(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
        other = model(
            torch.randn_like(batch["image"]), batch["input_ids"], batch["attention_mask"]
        ).logits
    labels = _spliced_labels(model, batch, n)
    answer = labels != -100
    changed = (logits != other).any(-1)
    assert changed[answer].all()
    for row, ids in enumerate(batch["input_ids"]):
        (where,) = (ids == model.image_token_id).nonzero(as_tuple=True)
        assert not changed[row, : int(where[0])].any()  # causal: the prompt's start
