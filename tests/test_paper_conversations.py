"""Every generator paper config, resolved through the real CLI with its 7B LLM swapped for a tiny
stand-in in a temporary folder, tokenizes a training sample with each answer ending in the
tokenizer's EOS id, in the format the authors trained with (FUSE stage 1 ``plain``, stage 2
``vicuna_v1``; GeoPix ``vicuna_v1``, LLaVA-1.5's; Aquila ``llama_3``, Llama-3's)."""

from __future__ import annotations

import sys
from importlib import import_module
from pathlib import Path

import pytest
import torch
import yaml

from tests.llm_folders import collate_one, llm_folder
from zoo.encoders.llm import LLMSpec
from zoo.main import main

ROOT = Path(__file__).parents[1]
#: (configs composed left to right, the LLM's style, the conversation format the authors used)
PAPER = {
    "fuse/stage1": (["configs/fuse/stage1.yaml"], "vicuna", "plain"),
    "fuse/stage2": (
        ["configs/fuse/stage1.yaml", "configs/fuse/stage2.yaml"],
        "vicuna",
        "vicuna_v1",
    ),
    "geopix/stage1": (["configs/geopix/stage1.yaml"], "vicuna", "vicuna_v1"),
    "geopix/stage2": (
        ["configs/geopix/stage1.yaml", "configs/geopix/stage2.yaml"],
        "vicuna",
        "vicuna_v1",
    ),
    "aquila/stage1": (["configs/aquila/stage1.yaml"], "llama_3", "llama_3"),
    "aquila/stage2": (
        ["configs/aquila/stage1.yaml", "configs/aquila/stage2.yaml"],
        "llama_3",
        "llama_3",
    ),
    # The default configs: a tiny random LLM on the embedded data's word-level tokenizer.
    "aquila": (["configs/aquila.yaml"], None, "word"),
    "fuse": (["configs/fuse.yaml"], None, "word"),
    "geopix": (["configs/geopix.yaml"], None, "word"),
}
TURNS = [
    {"from": "human", "value": "<image>\nWhat is in the image?"},
    {"from": "gpt", "value": "a harbour with three ships."},
    {"from": "human", "value": "How many ships?"},
    {"from": "gpt", "value": "three"},
]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper-llms")
    return {
        "vicuna": llm_folder(root / "vicuna-7b-v1.5"),
        "llama_3": llm_folder(root / "Meta-Llama-3-8B-Instruct", style="llama_3"),
    }


def resolve(configs: list[str], overrides: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *(a for c in configs for a in ("--config", c)), *overrides, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_config_ends_each_answer_with_the_eos_id(name, folders, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    configs, style, expected = PAPER[name]
    overrides = [] if style is None else [f"--model.init_args.llm.name={folders[style]}"]
    resolved = resolve(configs, [*overrides, "--model.init_args.llava=null"], capsys)
    llm = resolved["model"]["init_args"]["llm"]
    assert llm["conversation"] == (None if style is None else expected)
    assert resolved["data"]["init_args"].get("tokenizer") is None  # the LLM is named once
    data = resolved["data"]
    module, _, cls = data["class_path"].rpartition(".")
    init = {k: v for k, v in data["init_args"].items() if k != "llm"}
    dm = getattr(import_module(module), cls)(**init, llm=LLMSpec.of(llm))  # the CLI's link
    assert dm.conversation == expected
    if style is not None:
        assert dm.tokenizer.name_or_path == str(folders[style])
    turns = TURNS[:2] if expected == "plain" else TURNS
    batch = collate_one(dm.tokenizer, dm.conversation, turns, max_length=2048)
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    labelled = labels != -100
    ends = labelled & ~torch.cat([labelled[1:], labelled.new_zeros(1)])  # the last of each answer
    assert int(ends.sum()) == len(turns) // 2
    assert (ids[ends] == dm.tokenizer.eos_token_id).all()
    assert (labels[labelled] == ids[labelled]).all()
