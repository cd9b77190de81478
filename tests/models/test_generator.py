"""The generator core, through Aquila: splice, stages, LoRA merge, KV-cache decoding, export."""

from __future__ import annotations

import json

import pytest
import torch

from tests.models.conftest import make_aquila
from zoo.models import SFIConfig, TrainingStage
from zoo.models.generator import splice_visual_tokens

aquila = make_aquila


def test_splice_matches_plain_loop():
    torch.manual_seed(0)
    b, t, n, d, image = 3, 7, 4, 5, 99
    ids = torch.randint(0, 50, (b, t))
    ids[0, 0], ids[1, 3], ids[2, 6] = image, image, image  # first, middle, last position
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :2] = 0  # left padding
    labels = torch.randint(0, 50, (b, t))
    embeds, visual = torch.randn(b, t, d), torch.randn(b, n, d)
    out, new_mask, new_labels, positions = splice_visual_tokens(
        embeds, ids, mask, labels, image, visual
    )
    for i in range(b):
        p = int((ids[i] == image).nonzero())
        want = torch.cat([embeds[i, :p], visual[i], embeds[i, p + 1 :]])
        assert torch.equal(out[i], want)
        assert new_mask[i].tolist() == mask[i, :p].tolist() + [1] * n + mask[i, p + 1 :].tolist()
        assert (
            new_labels[i].tolist()
            == labels[i, :p].tolist() + [-100] * n + labels[i, p + 1 :].tolist()
        )
        assert positions[i].tolist() == list(range(p, p + n))


def test_splice_needs_exactly_one_image_token(dm):
    # Counted where the batch is made: the splice reads nothing back from the device.
    from zoo.data.conversations import ConversationCollate

    turns = [{"from": "human", "value": "Describe the image."}, {"from": "gpt", "value": "a field"}]
    sample = {"image": torch.zeros(3, 8, 8), "id": "x", "task": "caption", "conversations": turns}
    with pytest.raises(ValueError, match="0 <image> tokens"):
        ConversationCollate(dm.tokenizer)([sample])


def test_labels_only_on_answers(batch, dm):
    tok = dm.tokenizer
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        answer = tok.decode(ids[labels != -100], skip_special_tokens=True)
        assert answer and "user" not in answer and "<image>" not in answer


def _counts(model) -> dict[str, int]:
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = name.split(".")[0]
            out[key] = out.get(key, 0) + p.numel()
    return out


def test_stage_switching_by_trainable_counts(dm):
    stage1 = aquila(dm, stage=TrainingStage(train_connector=True))
    counts = _counts(stage1)
    modules = (stage1.projectors, stage1.connector, stage1.mda)
    connector = sum(p.numel() for m in modules for p in m.parameters())
    assert set(counts) == {"projectors", "connector", "mda"}
    assert sum(counts.values()) == connector
    rank = 4
    stage2 = aquila(dm, stage=TrainingStage(train_connector=True, lora_rank=rank))
    counts2 = _counts(stage2)
    assert set(counts2) == {"projectors", "connector", "mda", "llm"}
    cfg = stage2.llm.config
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    # LoRA adds r·(in + out) per adapted linear: q, k, v, o, gate, up, down.
    shapes = [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]
    assert counts2["llm"] == layers * sum(rank * (i + o) for i, o in shapes)
    frozen = aquila(dm, stage=TrainingStage(train_connector=False, train_vision=True))
    assert set(_counts(frozen)) == {"vision"}


def test_lora_merge_keeps_logits(dm, batch):
    model = aquila(dm, stage=TrainingStage(lora_rank=4)).eval()
    for name, p in model.llm.named_parameters():  # LoRA B starts at 0: make the adapters count
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    args = (batch["image"], batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        before = model(*args).logits
        model.merge_lora()
        after = model(*args).logits
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


def test_kv_cache_greedy_decoding_equals_full_recompute(dm, batch):
    model = aquila(dm, sfi=SFIConfig(mda_layers=[0, 2])).eval()
    model.generation.max_new_tokens = 5
    eos = dm.tokenizer.eos_token_id
    answers = model.generate(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"])
    ids, mask = batch["prompt_ids"], batch["prompt_attention_mask"]
    done = torch.zeros(len(ids), dtype=torch.bool)
    generated = []
    with torch.no_grad():
        for _ in range(5):  # no cache: the whole sequence again at every step, MDA included
            logits = model(batch["image"], ids, mask).logits[:, -1]
            pad = torch.full_like(done, dm.tokenizer.pad_token_id, dtype=torch.long)
            token = torch.where(done, pad, logits.argmax(-1))
            generated.append(token)
            done |= token == eos
            ids = torch.cat([ids, token[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(token)[:, None]], 1)
    want = dm.tokenizer.batch_decode(torch.stack(generated, 1), skip_special_tokens=True)
    assert answers == [w.strip() for w in want]


def test_stage_two_starts_from_stage_one(dm, batch, tmp_path):
    stage1 = aquila(dm)
    path = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": stage1.state_dict()}, path)
    stage2 = aquila(dm, stage=TrainingStage(lora_rank=4, init_checkpoint=str(path)))
    for name, value in stage1.connector.state_dict().items():
        assert torch.equal(stage2.connector.state_dict()[name], value)
    base = stage2.llm.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(base, stage1.llm.model.layers[0].self_attn.q_proj.weight)
    with pytest.raises(FileNotFoundError, match="init_checkpoint"):
        aquila(dm, stage=TrainingStage(init_checkpoint=str(tmp_path / "missing.ckpt")))


def test_predict_writes_one_json_line_per_question(dm, tmp_path):
    from lightning import Trainer

    from zoo.models import PredictionWriter

    out = tmp_path / "answers.jsonl"
    trainer = Trainer(
        logger=False,
        callbacks=[PredictionWriter(str(out))],
        enable_progress_bar=False,
        accelerator="cpu",
        devices=1,
    )
    model = aquila(dm)
    model.generation.max_new_tokens = 3
    trainer.predict(model, datamodule=dm, return_predictions=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(dm.predict_dataset)
    assert set(rows[0]) == {"id", "question", "answer", "reference"}
    assert not out.with_name(out.name + ".tmp").exists()


def test_export_merges_lora_into_safetensors(dm, batch, tmp_path):
    from safetensors.torch import load_model

    from zoo.export import export_model

    model = aquila(dm, stage=TrainingStage(lora_rank=4)).eval()
    for name, p in model.llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    args = (batch["image"], batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        want = model(*args).logits
    model.preprocessing = dm.preprocessing  # as a fit keeps it: the export folder stores it
    path = export_model(model, tmp_path)
    assert (tmp_path / "config.json").is_file() and (tmp_path / "tokenizer.json").is_file()
    plain = aquila(dm).eval()  # no LoRA: the merged weights load into the plain model
    load_model(plain, str(path))
    with torch.no_grad():
        assert torch.allclose(plain(*args).logits, want, atol=1e-5)


def test_stage_checkpoint_with_lora_is_merged(dm, batch, tmp_path):
    """A later stage starting from a LoRA stage keeps what that stage learnt."""
    stage1 = aquila(dm, stage=TrainingStage(lora_rank=4, lora_alpha=8))
    for name, p in stage1.llm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    path = tmp_path / "stage1.ckpt"
    torch.save(
        {
            "state_dict": stage1.state_dict(),
            "hyper_parameters": {"stage": {"lora_rank": 4, "lora_alpha": 8}},
        },
        path,
    )
    stage2 = aquila(dm, stage=TrainingStage(init_checkpoint=str(path)))
    args = (batch["image"], batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        assert torch.allclose(stage1.eval()(*args).logits, stage2(*args).logits, atol=1e-5)
