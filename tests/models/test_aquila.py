"""Aquila: MDA semantics, the Table 5 ablations, and a tiny model that learns."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from lightning import Trainer, seed_everything

from tests.layers.test_sfi import conv_concat_reference_loop
from tests.models.conftest import make_aquila
from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.encoders.llm import LLMSpec
from zoo.layers.sfi import ConvConcatBaseline
from zoo.metrics.vqa import normalize_answer
from zoo.models import Aquila, GenerationConfig, SFIConfig, TrainingStage
from zoo.models.aquila import AQUILA_OPTIMIZER, MultiLayerAlignment, window_sizes
from zoo.models.generator import splice_visual_tokens

aquila = make_aquila


def _plain_logits(model: Aquila, batch: dict) -> torch.Tensor:
    """The LLM on the spliced inputs with no hooks at all."""
    visual, _ = model.visual_tokens(batch["image"])
    embeds = model.llm.get_input_embeddings()(batch["input_ids"])
    embeds, mask, _, _ = splice_visual_tokens(
        embeds, batch["input_ids"], batch["attention_mask"], None, model.image_token_id, visual
    )
    return model.llm(inputs_embeds=embeds, attention_mask=mask).logits


@torch.no_grad()
def test_empty_mda_list_equals_no_mda(dm, batch):
    model = aquila(dm, sfi=SFIConfig(mda_layers=[]))
    assert not model.injection_hooks.handles and len(model.mda) == 0
    logits = model(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
    assert torch.equal(logits, _plain_logits(model, batch))
    with_mda = aquila(dm, sfi=SFIConfig(mda_layers=[1]))
    assert len(with_mda.injection_hooks.handles) == 1
    changed = with_mda(batch["image"], batch["input_ids"], batch["attention_mask"]).logits
    assert not torch.allclose(changed, _plain_logits(with_mda, batch))


@torch.no_grad()
def test_mda_writes_only_visual_positions(dm, batch):
    model = aquila(dm, sfi=SFIConfig(mda_layers=[1]))
    features = model.multiscale_features(batch["image"])
    b, n = len(batch["image"]), model.connector.num_tokens
    hidden = torch.randn(b, n + 10, model.llm_width)
    positions = torch.arange(3, 3 + n).expand(b, -1)
    out = model.inject_at(1, hidden, positions, features)
    text = torch.ones(n + 10, dtype=torch.bool)
    text[3 : 3 + n] = False
    assert torch.equal(out[:, text], hidden[:, text])
    assert not torch.allclose(out[:, ~text], hidden[:, ~text])
    # MDA is SFI with the visual hidden states as queries.
    want = model.mda["1"](features, hidden[:, 3 : 3 + n])
    assert torch.allclose(out[:, ~text], want)


def test_conv_concat_ablation_is_the_baseline_over_the_windows(dm, batch):
    """Table 5's ablation: the connector is the convolutional concatenation over the stages'
    windows (a loop over the grid cells gives its tokens), spliced as SFI's would be, and the
    loss is the next-token cross-entropy of the plain LLM on the answer tokens."""
    model = aquila(dm, sfi=SFIConfig(connector="conv", mda_layers=[]))
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.isfinite(out.loss)
    assert isinstance(model.connector, ConvConcatBaseline)
    assert model.connector.downsample == "conv" and model.connector.window_sizes == (4, 2, 1)
    with torch.no_grad():
        features = model.multiscale_features(batch["image"])
        tokens, _ = model.visual_tokens(batch["image"])
        reference = model.connector_proj(conv_concat_reference_loop(model.connector, features))
        torch.testing.assert_close(tokens, reference, atol=1e-5, rtol=1e-5)
        embeds = model.llm.get_input_embeddings()(batch["input_ids"])
        embeds, mask, labels, _ = splice_visual_tokens(
            embeds,
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            model.image_token_id,
            reference,
        )
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask).logits
    torch.testing.assert_close(out.logits.detach(), logits, atol=1e-5, rtol=1e-5)
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    torch.testing.assert_close(out.loss.detach(), expected, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    assert model.connector.parameters().__next__().grad is not None


def test_window_sizes_reach_sfi_and_every_mda_block(dm, batch):
    """At 64 px the three stages are 16, 8 and 4 cells: 4x4, 2x2 and 1x1 windows of a 4x4 grid;
    the keys know their place in the window, so permuting a window changes the tokens."""
    model = aquila(dm, sfi=SFIConfig(mda_layers=[1, 3]))
    assert model.window_sizes == [4, 2, 1] == window_sizes([4, 8, 16], 64, 4)
    blocks = [model.connector, *(m.sfi for m in model.mda.values())]
    assert all(b.window_sizes == (4, 2, 1) and b.window_pos is not None for b in blocks)
    with torch.no_grad():
        features = model.multiscale_features(batch["image"])
        permuted = [f.clone() for f in features]
        permuted[0][:, :, :4, :4] = features[0][:, :, :4, :4].flip(-1)  # window (0, 0), scale 0
        tokens = model.connector(features)
        change = (tokens - model.connector(permuted)).abs().amax(-1)
        assert change[:, 0].min() > 1e-4 and change[:, 1:].max() == 0
        hidden = torch.randn_like(tokens)
        mda = model.mda["1"]
        assert (mda(features, hidden) - mda(permuted, hidden))[:, 0].abs().max() > 1e-4
    unordered = aquila(dm, sfi=SFIConfig(key_positions=False))
    assert unordered.connector.window_pos is None and unordered.window_sizes == [4, 2, 1]
    with pytest.raises(ValueError, match="feature stage 2 .* multiple of 128"):
        window_sizes([4, 8, 16], 64, 8)


def test_sfi_dim_projects_to_and_from_the_llm_width(dm, batch):
    model = aquila(
        dm,
        sfi=SFIConfig(dim=32, block="paper", num_heads=1, mda_layers=[1]),
    )
    assert model.connector.dim == 32 and model.llm_width == 128
    assert all(p.mlp[-1].out_features == 32 for p in model.projectors)
    mda = model.mda["1"]
    assert isinstance(mda, MultiLayerAlignment) and mda.in_proj is not None
    with torch.no_grad():
        visual, features = model.visual_tokens(batch["image"])
        assert visual.shape[-1] == 128 and features[0].shape[1] == 32
        # MDA keeps the full-width hidden state and adds the projected SFI update.
        queries = mda.in_proj(visual)
        want = visual + mda.out_proj(mda.sfi(features, queries) - queries)
        torch.testing.assert_close(mda(features, visual), want)
    out = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"])
    out.loss.backward()
    assert mda.in_proj.weight.grad is not None and model.connector_proj.weight.grad is not None


#: Llama-3-8B-Instruct's config.json fields that shape the model (no weights are read).
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}


def test_stage1_trainable_parameters_on_the_meta_device(dm, tmp_path):
    """configs/aquila/stage1.yaml's model at full size (CLIP-ConvNeXt-XXL, Llama-3-8B) built on
    the meta device: stage 1 trains the projectors, SFI and MDA only, tens of millions of
    parameters at sfi.dim 1024 (1.61 B when SFI worked at the LLM width)."""
    config = yaml.safe_load((Path(__file__).parents[2] / "configs/aquila/stage1.yaml").read_text())
    args = dict(config["model"]["init_args"])
    llm = tmp_path / "llama3-8b"
    llm.mkdir()
    (llm / "config.json").write_text(json.dumps(LLAMA3_8B))
    # The embedded data's word-level tokenizer stands in for Llama-3's (its format: word).
    args.update(
        llm=LLMSpec(name=str(llm), pretrained=False),
        vision={**args["vision"], "pretrained": False},
        image_size=config["data"]["init_args"]["image_size"],
    )
    with torch.device("meta"):
        model = Aquila(tokenizer=dm.tokenizer, class_names=dm.class_names, **args)
    assert model.llm_width == 4096 and model.window_sizes == [8, 4, 2, 1]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    by_part = {
        name: sum(p.numel() for p in part.parameters())
        for name, part in (
            ("projectors", model.projectors),
            ("sfi", model.connector),
            ("connector_proj", model.connector_proj),
            ("mda", model.mda),
        )
    }
    print(f"stage-1 trainable parameters: {trainable:,} {by_part}")
    assert trainable == sum(by_part.values())
    assert 20e6 < trainable < 150e6


def test_feature_maps_must_tile_the_grid(dm):
    with pytest.raises(ValueError, match="grid"):
        model = aquila(
            dm,
            sfi=SFIConfig(feature_stages=[0, 1, 2, 3], grid_size=4),
        )  # the 2x2 map cannot
        model.visual_tokens(torch.zeros(1, 3, 64, 64))


def _majority_baseline(dm) -> float:
    """Accuracy of always answering the most frequent training answer of each question type."""
    from collections import Counter, defaultdict

    answers: dict[str, Counter] = defaultdict(Counter)
    for record in dm.train_dataset.records:
        types = record.get("question_types") or []
        turns = record["conversations"]
        for k, qtype in enumerate(types):
            answers[qtype][normalize_answer(turns[2 * k + 1]["value"])] += 1
    hits = total = 0
    for record in dm.test_dataset.records:
        qtype = record["question_types"][0]
        hits += answers[qtype].most_common(1)[0][0] == normalize_answer(
            record["conversations"][1]["value"]
        )
        total += 1
    return hits / total


@pytest.mark.slow
def test_aquila_learns_vqa_and_captions(tmp_path_factory):
    """A tiny Aquila (SFI + MDA, 1.7 M parameters) trained for 10 epochs (500 steps) on the
    captions and questions of 400 embedded images (~2.5 min on 2 CPU cores).

    Baselines: the majority answer of each question type on held-out VQA (0.28 here) and the
    caption BLEU-1 of the same model untrained (0.0). Measured (seed 0): VQA accuracy 0.53
    (scene category 0.81, presence 0.56, count 0.28).
    """
    root = tmp_path_factory.getbasetemp() / "learn"
    kwargs = dict(splits=EmbeddedSplits(400, 16, 40), batch_size=16)
    vqa = EmbeddedConversationDataModule(
        str(root), tasks=["caption", "vqa"], eval_tasks=["vqa"], **kwargs
    )
    caption = EmbeddedConversationDataModule(str(root), tasks=["caption"], **kwargs)
    vqa.prepare_data()
    vqa.setup("fit")
    vqa.setup("test")
    seed_everything(0)
    model = Aquila(
        tokenizer=vqa.tokenizer,
        class_names=vqa.class_names,
        optimizer=replace(AQUILA_OPTIMIZER, lr=2e-3),
        val_generate_batches=0,
        stage=TrainingStage(train_vision=True, train_llm=True),
        generation=GenerationConfig(max_new_tokens=24),
    )

    def test(datamodule) -> dict[str, float]:
        trainer = Trainer(logger=False, enable_progress_bar=False, accelerator="cpu", devices=1)
        return {
            k: float(v)
            for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()
        }

    untrained_bleu = test(caption)["test_BLEU-1"]
    trainer = Trainer(
        max_epochs=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        devices=1,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=vqa)
    majority = _majority_baseline(vqa)
    accuracy = test(vqa)["test_vqa_accuracy"]
    bleu = test(caption)["test_BLEU-1"]
    print(
        f"VQA {accuracy:.3f} vs majority {majority:.3f}; BLEU-1 {bleu:.3f} vs untrained {untrained_bleu:.3f}"
    )
    assert accuracy > majority + 0.1
    assert bleu > untrained_bleu + 0.2
