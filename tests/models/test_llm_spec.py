"""One LLM specification: the model's ``llm`` gives the data its tokenizer and conversation
format (through the real CLI), a tokenizer that does not belong to the LLM is refused, and a
tiny generator trained on one answer stops on the EOS.

The LLMs are tiny random Llamas saved beside template-less Llama-style tokenizers in temporary
folders (:mod:`tests.llm_folders`), as Vicuna v1.5's tokenizer is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.llm_folders import llm_folder
from zoo.data.conversations import ConversationCollate
from zoo.data.tokenize import build_tokenizer
from zoo.encoders.llm import LLMSpec
from zoo.main import main
from zoo.models import Aquila, SFIConfig
from zoo.models.generator import GenerationConfig, TrainingStage

ROOT = Path(__file__).parents[2]
TINY_DATA = [
    "--data.init_args.splits.train=8",
    "--data.init_args.splits.val=4",
    "--data.init_args.splits.test=4",
    "--trainer.logger=false",
    "--data.init_args.max_length=1024",
]  # no answer cut by truncation


@pytest.fixture(scope="module")
def vicuna(tmp_path_factory) -> Path:
    return llm_folder(tmp_path_factory.mktemp("llm") / "vicuna", layers=4)


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])


def test_a_tokenizer_larger_than_the_llm_is_an_error_naming_both(tmp_path):
    small = llm_folder(tmp_path / "small-llm", llm_vocab=40)  # a 40-row table, 221 tokens
    tokenizer = build_tokenizer(str(small), chat=True)
    with pytest.raises(ValueError, match=r"221 tokens but LLM .*small-llm.* embeds 40"):
        Aquila(
            llm=LLMSpec(name=str(small), conversation="vicuna_v1"),
            tokenizer=tokenizer,
            sfi=SFIConfig(mda_layers=[1]),
        )


def test_an_eos_outside_the_llm_is_an_error(tmp_path, vicuna):
    tokenizer = build_tokenizer(str(vicuna), chat=True)
    tokenizer.add_special_tokens({"eos_token": "<|end|>"})  # a new id past the LLM's table
    with pytest.raises(ValueError, match=r"eos id .* outside the .*-row embedding table of LLM"):
        Aquila(
            llm=LLMSpec(name=str(vicuna), conversation="vicuna_v1"),
            tokenizer=tokenizer,
            sfi=SFIConfig(mda_layers=[1]),
        )


def test_the_data_follows_the_models_llm_through_the_cli(in_repo, vicuna, tmp_path):
    args = [
        "--config",
        "configs/aquila.yaml",
        *TINY_DATA,
        f"--data.init_args.root={tmp_path}",
        f"--model.init_args.llm.name={vicuna}",
        "--model.init_args.llm.conversation=vicuna_v1",
    ]
    cli = main(args, run=False)
    dm, model = cli.datamodule, cli.model
    assert dm.tokenizer.name_or_path == str(vicuna)
    assert model.tokenizer is dm.tokenizer
    assert dm.conversation == model.conversation == "vicuna_v1"
    assert model.llm.get_input_embeddings().num_embeddings == len(dm.tokenizer)  # + <image>
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    eos = dm.tokenizer.eos_token_id
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        labelled = labels != -100
        ends = labelled & ~torch.cat([labelled[1:], labelled.new_zeros(1)])  # last of each run
        assert ends.any() and (ids[ends] == eos).all()
    # A template-less tokenizer with no format chosen: the error names the key to set.
    with pytest.raises(ValueError, match=r"model\.init_args\.llm\.conversation"):
        _ = main(
            [*args[:-1], "--model.init_args.llm.conversation=null"], run=False
        ).datamodule.conversation
    # The data's tokenizer, when set, must be the LLM's.
    with pytest.raises(ValueError, match="the data follows model.init_args.llm"):
        main([*args, f"--data.init_args.tokenizer={tmp_path}"], run=False)


def test_a_generator_trained_on_one_answer_stops_on_eos(tmp_path):
    """The acceptance line: a few steps on one answer, then ``generate`` ends it with EOS well
    before ``max_new_tokens`` (the LLM's own config names no EOS: only the zoo's stop ids)."""
    vicuna = llm_folder(tmp_path / "vicuna", layers=2)
    tokenizer = build_tokenizer(str(vicuna), chat=True)
    torch.manual_seed(0)
    model = Aquila(
        llm=LLMSpec(name=str(vicuna), conversation="vicuna_v1"),
        tokenizer=tokenizer,
        sfi=SFIConfig(mda_layers=[1]),
        stage=TrainingStage(train_llm=True),
        generation=GenerationConfig(max_new_tokens=24),
    )
    sample = {
        "image": torch.rand(3, 64, 64),
        "id": "0",
        "task": "caption",
        "question_type": "",
        "conversations": [
            {"from": "human", "value": "<image>\nHow many ships?"},
            {"from": "gpt", "value": "three ships."},
        ],
    }
    batch = ConversationCollate(tokenizer, 256, (), model.conversation)([sample])
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for _ in range(25):
        loss = model(
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"]
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    ids = model.generate_ids(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"])[0]
    assert tokenizer.eos_token_id in ids.tolist(), f"no EOS in {ids.tolist()} (loss {loss:.3f})"
    assert len(ids) < 24 and ids[-1] == tokenizer.eos_token_id
    assert model.generate(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"]) == [
        "three ships."
    ]


def test_a_checkpoint_saved_before_the_spec_applies_its_llm_keys_through_the_spec():
    from zoo.checkpoints import merge_hyperparameters

    old = {"llm": "tiny", "llm_pretrained": False, "gguf_file": None, "llm_dtype": "bfloat16"}
    current = {
        "llm": {"name": "tiny", "conversation": None, "dtype": "float32", "pretrained": True}
    }
    apply, messages = merge_hyperparameters(old, current, set())
    assert apply == {
        "llm": {"name": "tiny", "pretrained": False, "gguf_file": None, "dtype": "bfloat16"}
    }
    assert LLMSpec.of(apply["llm"]) == LLMSpec("tiny", dtype="bfloat16", pretrained=False)
    assert any("llm.dtype" in m for m in messages)
