"""``zoo export --format hf`` and the Hub (issue 23): the self-contained folder, its model card
(parsed by ``huggingface_hub``), ``--push_to_hub`` against a stand-in for the Hub's HTTP API
(tests/hub_standin.py: the real ``HfApi`` client talks HTTP to it, nothing else is mocked) and
``zoo.load("hf-hub:org/name")`` from the local Hugging Face cache with the network off."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard, snapshot_download
from safetensors.torch import load, load_file

import zoo
from tests.hub_standin import HubStandIn
from tests.test_ckpt_path import _override
from zoo.evaluation.results import result_rows, write_results
from zoo.hub import HubUploadError, _base_models, _datasets, push_folder
from zoo.main import build_from_configs, main

ROOT = Path(__file__).parents[1]
CONFIG = str(ROOT / "configs" / "flavars.yaml")
#: What ``zoo export --format hf`` writes for the tiny FLAVARS (a word-level tokenizer's files).
EXPECTED = {
    "README.md",
    "chat_template.jinja",
    "config.json",
    "config.yaml",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


def _results(folder: Path) -> Path:
    """A ``results.json`` in ``zoo evaluate``'s format (its own writer): one scored
    evaluation beside a paper's number, one failed."""
    scored = types.SimpleNamespace(
        name="EuroSAT zero-shot",
        protocol="zero_shot",
        source="SkyScript (AAAI-24) Table 2",
        path="configs/eval/eurosat_zero_shot.yaml",
    )
    failed = types.SimpleNamespace(
        name="AID kNN", protocol="knn", source="", path="configs/eval/aid_knn.yaml"
    )
    rows = result_rows(scored, {"zero_shot_top1": 0.4123}, None, {"zero_shot_top1": 33.30})
    rows += result_rows(failed, {}, "data/aid is missing", {})
    header = {"model": "FLAVARS", "date": "2026-12-07 03:00 UTC"}
    write_results(rows, folder, header)
    return folder / "results.json"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny FLAVARS' weights (moved off their initial values) exported with its card."""
    folder = tmp_path_factory.mktemp("hub")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["zoo"])
        patch.chdir(folder)
        override = _override(folder, folder / "runs", folder / "data")
        model = build_from_configs([CONFIG, override]).model
        state = {k: v + 0.25 if v.is_floating_point() else v for k, v in model.state_dict().items()}
        torch.save(state, folder / "weights.pt")
        configs = ["--config", CONFIG, "--config", str(override)]
        args = [*configs, "--ckpt_path", str(folder / "weights.pt")]
        output = folder / "export"
        results = _results(folder)
        card = ["--format", "hf", "--results", str(results), "--license", "apache-2.0"]
        main(["export", *args, "--output", str(output), *card])
    return types.SimpleNamespace(
        folder=folder, output=output, args=args, state=state, results=results
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_export_writes_the_self_contained_folder(exported):
    """The folder of save_pretrained plus the card; the weights are the checkpoint's."""
    assert set(_files(exported.output)) == EXPECTED
    weights = load_file(exported.output / "model.safetensors")
    assert set(weights) <= set(exported.state)
    for key, value in weights.items():
        assert torch.equal(value, exported.state[key]), key
    config = json.loads((exported.output / "config.json").read_text())
    assert config["library_name"] == "rs-vlm-zoo"
    assert config["model_class"].endswith("FLAVARS")
    training = yaml.safe_load((exported.output / "config.yaml").read_text())
    assert training["model"]["class_path"].endswith("FLAVARS")


def test_the_card_parses_with_its_metadata_and_results(exported):
    card = ModelCard.load(exported.output / "README.md")
    data = card.data
    assert data.license == "apache-2.0"
    assert data.library_name == "rs-vlm-zoo"
    assert {"remote-sensing", "earth-observation", "flavars", "vision-language"} <= set(data.tags)
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert data.base_model is None  # the tiny config starts from no Hub model
    # model-index: one entry per scored metric, the value of ours in percent; none for the error
    (result,) = data.eval_results
    assert result.metric_type == "zero_shot_top1"
    assert result.metric_value == pytest.approx(41.23)
    assert result.dataset_name == "EuroSAT zero-shot"
    assert result.task_type == "zero-shot-image-classification"
    text = card.text
    assert "https://arxiv.org/abs/2501.08490" in text  # the paper card's paper
    assert "| 41.23 | 33.30 | +7.93 |" in text  # ours beside the paper's number
    assert "data/aid is missing" in text
    assert 'zoo.load("hf-hub:org/export")' in text and "model.encode_image(" in text
    assert "<details>" in text  # the training config, collapsed, as YAML that parses
    block = text.split("```yaml\n", 1)[1].split("\n```", 1)[0]
    assert yaml.safe_load(block)["model"]["class_path"].endswith("FLAVARS")
    assert "| `model.safetensors` |" in text and "| `tokenizer.json` |" in text


def test_base_models_are_real_hub_ids_only(tmp_path):
    """Hub ids from the hyper-parameters and sources; no local folder, no tiny / random model;
    a timm name with a pretrained tag becomes its timm/ repository."""
    local = tmp_path / "org" / "folder"
    local.mkdir(parents=True)
    hyper = {
        "llava": "llava-hf/llava-1.5-7b-hf",
        "llm": {"name": "meta-llama/Meta-Llama-3-8B-Instruct"},
        "vision": {"name": "convnext_xxlarge.clip_laion2b_soup", "pretrained": True},
        "text": {"name": "tiny"},
        "flava": {"folder": str(local)},
        "other": {"name": "hf-internal-testing/tiny-random-LlamaForCausalLM"},
        "stage": {"init_checkpoint": "runs/stage1/last.ckpt"},
        "location": {"checkpoint": "checkpoints/satclip"},  # a local path not made yet
        "probe": {"name": "vit_small_patch16_224", "pretrained": False},
    }
    sources = {"facebook/flava-full": {}, "llava-hf/llava-1.5-7b-hf": {}}
    assert _base_models(hyper, sources) == [
        "llava-hf/llava-1.5-7b-hf",
        "meta-llama/Meta-Llama-3-8B-Instruct",
        "timm/convnext_xxlarge.clip_laion2b_soup",
        "facebook/flava-full",
    ]


def test_datasets_are_the_public_ones_the_data_names():
    geochat = yaml.safe_load((ROOT / "configs/data/geochat.yaml").read_text())
    assert _datasets(geochat) == ["MBZUAI/GeoChat_Instruct"]
    skyscript = yaml.safe_load((ROOT / "configs/data/skyscript.yaml").read_text())
    assert _datasets(skyscript) == []


def test_push_to_hub_sends_the_folder(exported, tmp_path, monkeypatch):
    """``--push_to_hub``: the stand-in receives exactly the folder's files, byte for byte, with
    the token; a model object (ZooTask.push_to_hub) pushes the same files."""
    with HubStandIn() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
        output = tmp_path / "export"
        main(["export", *exported.args, "--output", str(output), "--push_to_hub", "org/flavars"])
        model, _, _ = zoo.load(output)
        model.push_to_hub("org/flavars-again", private=True)
    local = _files(output)
    assert set(local) == EXPECTED
    assert hub.repos["org/flavars"]["files"] == local
    assert hub.repos["org/flavars"]["private"] is False
    assert [c["repo"] for c in hub.commits] == ["org/flavars", "org/flavars-again"]
    assert set(hub.tokens) == {"Bearer hf_stand_in"}
    sent = hub.repos["org/flavars"]["files"]["README.md"].decode()
    card = ModelCard(sent)
    assert card.data.library_name == "rs-vlm-zoo" and card.data.license == "other"
    assert 'zoo.load("hf-hub:org/flavars")' in card.text
    again = hub.repos["org/flavars-again"]
    assert again["private"] is True
    assert set(again["files"]) == EXPECTED
    model_class = (
        json.loads(files["config.json"])["model_class"] for files in (again["files"], local)
    )
    assert len(set(model_class)) == 1
    assert again["files"]["preprocessor_config.json"] == local["preprocessor_config.json"]
    pushed = load(again["files"]["model.safetensors"])  # the model object's export
    assert set(pushed) == set(load_file(output / "model.safetensors"))
    for key, value in pushed.items():
        assert torch.equal(value, exported.state[key]), key


def test_a_refused_push_names_the_repo_and_how_to_log_in(exported, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    shutil.copytree(exported.output, folder)
    before = _files(folder)
    with HubStandIn(deny=True) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        with pytest.raises(HubUploadError) as error:
            push_folder(folder, "org/denied", token="hf_expired")
    message = str(error.value)
    assert "org/denied" in message and "hf auth login" in message and "HTTP 401" in message
    assert hub.requests and not hub.commits
    assert _files(folder) == before  # nothing changed, nothing left half-written


@pytest.mark.parametrize("offline", ["unreachable", "HF_HUB_OFFLINE"])
def test_load_from_the_hub_cache_offline(exported, tmp_path, monkeypatch, offline):
    """``zoo.load("hf-hub:org/name")`` with the network off reads the local cache (filled by a
    download from the stand-in) and gives the outputs of the folder it came from."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    with HubStandIn() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        push_folder(exported.output, "org/flavars", token="hf_stand_in")
        snapshot_download("org/flavars", endpoint=hub.endpoint, cache_dir=cache)
        dead = hub.endpoint
    # the stand-in is shut: the network is off
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model, transform, tokenizer = zoo.load("hf-hub:org/flavars")
    reference, reference_transform, _ = zoo.load(exported.output)
    image = torch.randint(0, 256, (3, 80, 96), dtype=torch.uint8).numpy()
    pixels = transform(image).unsqueeze(0)
    assert torch.equal(pixels, reference_transform(image).unsqueeze(0))
    text = tokenizer(["a harbour seen from above"], return_tensors="pt", padding=True)
    with torch.no_grad():
        for ours, theirs in zip(
            model.encode_image(pixels), reference.encode_image(pixels), strict=True
        ):
            assert torch.equal(ours, theirs)
        ids, mask = text["input_ids"], text["attention_mask"]
        assert torch.equal(model.encode_text(ids, mask), reference.encode_text(ids, mask))
    weights = load_file(exported.output / "model.safetensors")
    for key, value in weights.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_load_from_the_hub_offline_without_a_cached_copy(tmp_path, monkeypatch):
    """Never downloaded and the network off: an error that names the repository and what to do."""
    from huggingface_hub import constants

    with HubStandIn() as hub:
        dead = hub.endpoint
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    with pytest.raises(FileNotFoundError, match=r"hf-hub:org/never-seen .*connect once"):
        zoo.load("hf-hub:org/never-seen")


@pytest.mark.parametrize(
    ("family", "call"),
    [("aquila", "model.answer("), ("fuse", "model.answer("), ("geopix", "model.segment(")],
)
def test_generator_exports_carry_their_card(family, call, tmp_path, monkeypatch):
    """Each generator's export: its card parses with the family's tags, pipeline and
    inference call, and the folder loads back with the exported weights."""
    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "configs" / f"{family}.yaml")
    override = _override(tmp_path, tmp_path / "runs", tmp_path / "data")
    model = build_from_configs([config, override]).model
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    output = tmp_path / "export"
    args = [
        "--config",
        config,
        "--config",
        str(override),
        "--ckpt_path",
        str(tmp_path / "weights.pt"),
    ]
    main(["export", *args, "--output", str(output), "--format", "hf"])
    card = ModelCard.load(output / "README.md")
    assert {family, "vision-language", "remote-sensing"} <= set(card.data.tags)
    assert card.data.pipeline_tag == "image-text-to-text"
    assert call in card.text
    conversation = json.loads((output / "config.json").read_text())["conversation"]
    assert conversation and f"Conversation format: {conversation}" in card.text
    loaded, _, _ = zoo.load(output)
    for key, value in load_file(output / "model.safetensors").items():
        assert torch.equal(loaded.state_dict()[key], value), key
