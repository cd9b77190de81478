"""A trained model loads without the pretrained sources it was built from (issue 23).

Each model below is built from a source a colleague may not have: a Hugging Face LLM folder,
a LLaVA folder of either layout (and LLaVA's stage-1 projector), a FLAVA folder and its
codebook, a timm ``local-dir:`` folder, a timm name with ``pretrained=True``, a weight file, a
BERT folder, a CLIP folder and a SatCLIP checkpoint. It is saved (an export folder, or a
Lightning checkpoint), the sources are deleted, the network and every pretrained reader are
blocked, and ``zoo.load`` / ``load_from_checkpoint`` must give the same tensors and outputs.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path

import pytest
import timm
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    CLIPVisionModel,
    FlavaImageCodebook,
    PretrainedConfig,
    PreTrainedModel,
)

import zoo
from tests.encoders.test_llava import IMAGE_SIZE, clip_config, hf_checkpoint, write_processor
from tests.encoders.test_llava import original_checkpoint as llava_original  # noqa: F401
from tests.llm_folders import llm_folder
from tests.models.test_flavars_flava import CODEBOOK, IMAGE, save_tiny_flava
from tests.models.test_fuse_stages import release  # noqa: F401
from zoo.data.tokenize import build_tokenizer, word_level_tokenizer
from zoo.encoders.flava import FlavaSpec
from zoo.encoders.llava import llava_processor
from zoo.encoders.llm import LLMSpec
from zoo.encoders.location import LocationEncoder, LocationSpec
from zoo.encoders.sources import MissingSourceError, architecture_only, collect_sources
from zoo.encoders.text import TextSpec
from zoo.encoders.vision import VisionSpec
from zoo.models import FLAVARS, FUSE, FuseInjection, FuseViews
from zoo.preprocessing import Preprocessing
from zoo.pretrained import save_pretrained

_ = hf_checkpoint  # a fixture, used by name

WORDS = "a an the of satellite image photo river forest field road city farm".split()


class SourceRead(AssertionError):
    """A pretrained source was read while a trained model loaded (no builder catches it)."""


def _refuse(*args, **kwargs):
    raise SourceRead(f"a pretrained source was read: {args[1:] or args} {kwargs}")


def block_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network, and every reader of pretrained weights or configs raises."""
    import huggingface_hub.constants
    import timm.models._builder
    import timm.models._factory

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(_refuse))
    read_config = PretrainedConfig.from_pretrained.__func__

    def config_of_stored_tokenizer_only(cls, name, *args, **kwargs):
        # The tokenizer is rebuilt from the files the export stores, in a temporary folder.
        if "zoo-tokenizer-" not in str(name):
            _refuse(cls, name, *args, **kwargs)
        return read_config(cls, name, *args, **kwargs)

    monkeypatch.setattr(
        PretrainedConfig, "from_pretrained", classmethod(config_of_stored_tokenizer_only)
    )
    monkeypatch.setattr(timm.models._builder, "load_pretrained", _refuse)
    monkeypatch.setattr(timm.models._factory, "load_model_config_from_hf", _refuse)
    monkeypatch.setattr(timm.models._factory, "load_model_config_from_path", _refuse)
    monkeypatch.setattr(timm.models._factory, "load_checkpoint", _refuse)


def assert_same_weights(model: nn.Module, loaded: nn.Module) -> None:
    """Every tensor of the state dict, and the non-persistent buffers, equal."""
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert list(ours) == list(theirs)
    for key, value in ours.items():
        assert theirs[key].dtype == value.dtype, key
        assert torch.equal(theirs[key], value), key
    buffers = dict(loaded.named_buffers())
    for key, value in model.named_buffers():
        assert torch.equal(buffers[key], value), key


def export_and_forget(
    model: nn.Module, root: Path, sources: Iterable[Path], monkeypatch: pytest.MonkeyPatch
) -> nn.Module:
    """Export ``model``, delete ``sources``, block reading, load the export."""
    model.preprocessing = Preprocessing(image_size=int(model.hparams.image_size))
    export = save_pretrained(model, root / "export")
    stored = json.loads((export / "config.json").read_text())["sources"]
    for source in sources:
        named = [name for name in stored if name.startswith(str(source))]
        assert named, f"{source} is not among the export's sources {list(stored)}"
        shutil.rmtree(source)
    block_sources(monkeypatch)
    loaded, _, _ = zoo.load(export, device="cpu")
    assert_same_weights(model, loaded)
    # Saved again, it still carries them (as the export stored them: JSON types).
    assert collect_sources(loaded) == json.loads(json.dumps(collect_sources(model)))
    return loaded


def generator_outputs(model: nn.Module) -> tuple[torch.Tensor, list[str]]:
    """Logits and greedy answers of two images and prompts."""
    torch.manual_seed(2)
    size = model.image_size
    image = torch.randn(2, 3, size, size)
    tokenizer = model.tokenizer
    ids = tokenizer(["<image> what is here", "<image> a field"], add_special_tokens=False)
    ids = torch.tensor([row[:3] for row in ids["input_ids"]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        return model(image, ids, mask).logits, model.generate(image, ids, mask)


def assert_same_generator(model: nn.Module, loaded: nn.Module) -> None:
    logits, answers = generator_outputs(model.eval())
    logits_loaded, answers_loaded = generator_outputs(loaded)
    assert torch.equal(logits, logits_loaded)
    assert answers == answers_loaded


def assert_same_embeddings(model: FLAVARS, loaded: FLAVARS, size: int) -> None:
    torch.manual_seed(3)
    image = torch.randn(2, 3, size, size)
    tokens = model.tokenizer(["a river", "the city road"], padding=True, return_tensors="pt")
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        assert torch.equal(model.eval().encode_image(image), loaded.encode_image(image))
        assert torch.equal(model.encode_text(ids, mask), loaded.encode_text(ids, mask))


def fuse_with_llm(folder: Path) -> FUSE:
    """FUSE on a zoo_vit_tiny and the LLM of a Hugging Face folder."""
    torch.manual_seed(0)
    return FUSE(
        tokenizer=build_tokenizer(str(folder), chat=True),
        llm=LLMSpec(name=str(folder), conversation="vicuna_v1"),
        inject=FuseInjection(layers=[1]),
        views=FuseViews(multi_scale=False, global_layer=-2, detail_layers=[1, 2]),
        image_size=64,
    ).eval()


def test_generator_with_an_llm_folder_loads_without_it(tmp_path, monkeypatch):
    folder = llm_folder(tmp_path / "vicuna-tiny")
    model = fuse_with_llm(folder)
    loaded = export_and_forget(model, tmp_path, [folder], monkeypatch)
    assert_same_generator(model, loaded)


def test_a_lightning_checkpoint_loads_without_its_llm_folder(tmp_path, monkeypatch):
    """``Family.load_from_checkpoint`` of a checkpoint ``on_save_checkpoint`` wrote."""
    folder = llm_folder(tmp_path / "vicuna-tiny")
    model = fuse_with_llm(folder)
    model.preprocessing = Preprocessing(image_size=64)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams) | {"_class_path": "zoo.models.FUSE"},
    }
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    shutil.rmtree(folder)
    block_sources(monkeypatch)
    loaded = FUSE.load_from_checkpoint(tmp_path / "last.ckpt")
    assert_same_weights(model, loaded)
    assert_same_generator(model, loaded)


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def fuse_with_llava(folder: Path, **kwargs) -> FUSE:
    processor = llava_processor(folder)
    torch.manual_seed(0)
    return FUSE(
        tokenizer=build_tokenizer(processor.tokenizer, chat=True),
        llava=str(folder),
        inject=FuseInjection(layers=[1]),
        views=FuseViews(multi_scale=False, global_layer=-2, detail_layers=[0, 1]),
        image_size=IMAGE_SIZE,
        **kwargs,
    ).eval()


def test_generator_with_a_llava_folder_loads_without_it(hf_checkpoint, tmp_path, monkeypatch):
    """transformers' layout: the LLM, the CLIP tower and the projector from the folder."""
    folder = _copy(hf_checkpoint[0], tmp_path / "llava-hf")
    model = fuse_with_llava(folder)
    loaded = export_and_forget(model, tmp_path, [folder], monkeypatch)
    assert_same_generator(model, loaded)


def test_original_llava_layout_loads_without_it_or_its_tower(
    llava_original,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The LLaVA repository's layout, its tower in a folder of its own."""
    folder, *_ = llava_original
    copy = _copy(folder, tmp_path / "llava-v1.5")
    tower = json.loads((folder / "config.json").read_text())["mm_vision_tower"]
    _copy(Path(tower), copy / "tower")
    config = json.loads((copy / "config.json").read_text()) | {"mm_vision_tower": "tower"}
    (copy / "config.json").write_text(json.dumps(config))
    model = fuse_with_llava(copy)
    loaded = export_and_forget(model, tmp_path, [copy], monkeypatch)
    assert_same_generator(model, loaded)


def test_llavas_stage1_projector_is_not_read_again(release, tmp_path, monkeypatch):  # noqa: F811
    """``llava_projector``: the checkpoint holds the projector (no configuration to store)."""
    folder = _copy(release[0], tmp_path / "llava-pretrain")
    tokenizer = word_level_tokenizer(WORDS)
    model = FUSE(
        tokenizer=tokenizer,
        llava_projector=str(folder),
        inject=FuseInjection(layers=[1]),
        views=FuseViews(multi_scale=False, detail_layers=[1, 2]),
    ).eval()
    torch.testing.assert_close(
        model.projector[0].bias, release[1]["model.mm_projector.0.bias"].float()
    )
    model.preprocessing = Preprocessing(image_size=64)
    export = save_pretrained(model, tmp_path / "export")
    shutil.rmtree(folder)
    block_sources(monkeypatch)
    loaded, _, _ = zoo.load(export, device="cpu")
    assert_same_weights(model, loaded)


def test_generator_with_a_clip_folder_loads_without_it(tmp_path, monkeypatch):
    folder = tmp_path / "clip"
    torch.manual_seed(4)
    CLIPVisionModel(clip_config()).save_pretrained(folder)
    write_processor(folder)
    tokenizer = word_level_tokenizer(WORDS)
    model = FUSE(
        tokenizer=tokenizer,
        vision=VisionSpec(name=str(folder), pretrained=True),
        inject=FuseInjection(layers=[1]),
        views=FuseViews(multi_scale=False, global_layer=-2, detail_layers=[0, 1]),
        image_size=IMAGE_SIZE,
    ).eval()
    loaded = export_and_forget(model, tmp_path, [folder], monkeypatch)
    assert_same_generator(model, loaded)


def test_flavars_with_a_flava_folder_and_codebook_loads_without_them(tmp_path, monkeypatch):
    flava, codebook = tmp_path / "flava", tmp_path / "codebook"
    save_tiny_flava(flava)
    FlavaImageCodebook(CODEBOOK).save_pretrained(codebook)
    torch.manual_seed(0)
    model = FLAVARS(
        flava=FlavaSpec(str(flava), str(codebook)),
        image_size=IMAGE,
        tokenizer=build_tokenizer(str(flava)),
    ).eval()
    loaded = export_and_forget(model, tmp_path, [flava, codebook], monkeypatch)
    assert_same_embeddings(model, loaded, IMAGE)
    # The codebook's normalization (not in the state dict) came from the FLAVA processor.
    assert torch.equal(loaded.codebook.mean, model.codebook.mean)


def _timm_folder(folder: Path) -> Path:
    """A timm ``local-dir:`` folder (config.json + weights) of a zoo_vit_tiny."""
    torch.manual_seed(5)
    timm.models.save_for_hf(timm.create_model("zoo_vit_tiny", num_classes=0), folder)
    return folder


def _satclip(path: Path) -> Path:
    torch.manual_seed(6)
    path.parent.mkdir()
    encoder = LocationEncoder(legendre_polys=5, dim_hidden=16, num_layers=2, dim_out=8)
    state = {f"model.location.{k}": v for k, v in encoder.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"legendre_polys": 5}}, path)
    return path


def _bert_folder(folder: Path, vocab_size: int) -> Path:
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
    )
    torch.manual_seed(7)
    BertModel(config).save_pretrained(folder)
    return folder


def test_flavars_with_timm_bert_and_satclip_sources_loads_without_them(tmp_path, monkeypatch):
    """A timm local-dir folder (pretrained), a BERT folder and a SatCLIP checkpoint."""
    tokenizer = word_level_tokenizer(WORDS)
    vision = _timm_folder(tmp_path / "vit")
    bert = _bert_folder(tmp_path / "bert", len(tokenizer))
    satclip = _satclip(tmp_path / "satclip" / "satclip.ckpt")
    torch.manual_seed(0)
    model = FLAVARS(
        vision=VisionSpec(name=str(vision), pretrained=True),
        text=TextSpec(name=str(bert)),
        location=LocationSpec(checkpoint=str(satclip)),
        tokenizer=tokenizer,
    ).eval()
    assert torch.equal(
        model.encoders.vision_encoder.model.cls_token,
        timm.create_model(f"local-dir:{vision}", pretrained=True).cls_token,
    )
    loaded = export_and_forget(model, tmp_path, [vision, bert, satclip.parent], monkeypatch)
    assert_same_embeddings(model, loaded, 64)


def test_a_timm_name_with_pretrained_weights_and_a_weight_file_are_not_read(tmp_path, monkeypatch):
    """timm's own names: the architecture is timm's code, nothing is stored or read."""
    import timm.models._builder

    weights = tmp_path / "weights" / "vit.pth"
    weights.parent.mkdir()
    torch.save(timm.create_model("zoo_vit_tiny", num_classes=0).state_dict(), weights)
    with monkeypatch.context() as patch:  # timm's pretrained weights, without a download
        patch.setattr(timm.models._builder, "load_pretrained", lambda model, *a, **k: None)
        model = FLAVARS(
            vision=VisionSpec(name="test_vit.r160_in1k", pretrained=True),
            tokenizer=word_level_tokenizer(WORDS),
        ).eval()
        file = FLAVARS(
            vision=VisionSpec(name="zoo_vit_tiny", checkpoint=str(weights)),
            tokenizer=word_level_tokenizer(WORDS),
        ).eval()
    model.preprocessing = file.preprocessing = Preprocessing(image_size=64)
    exports = [save_pretrained(m, tmp_path / name) for m, name in ((model, "a"), (file, "b"))]
    shutil.rmtree(weights.parent)
    block_sources(monkeypatch)
    for original, export in zip((model, file), exports, strict=True):
        loaded, _, _ = zoo.load(export, device="cpu")
        assert_same_weights(original, loaded)


def test_an_older_export_loads_where_its_source_is_available(tmp_path, monkeypatch):
    """No stored sources (written before them): the source's configuration is read, the
    weights still come from the export; where the source is gone, a readable KeyError."""
    folder = llm_folder(tmp_path / "vicuna-tiny")
    model = fuse_with_llm(folder)
    model.preprocessing = Preprocessing(image_size=64)
    export = save_pretrained(model, tmp_path / "export")
    config = json.loads((export / "config.json").read_text())
    (export / "config.json").write_text(json.dumps(config | {"sources": {}}))
    loaded, _, _ = zoo.load(export, device="cpu")
    assert_same_weights(model, loaded)
    assert list(collect_sources(loaded)) == [str(folder)]  # saved again, it carries it
    shutil.rmtree(folder)
    block_sources(monkeypatch)
    with pytest.raises(KeyError) as raised:
        zoo.load(export, device="cpu")
    assert isinstance(raised.value, MissingSourceError)
    message = str(raised.value)
    assert message.startswith("the checkpoint stores no configuration for the pretrained source")
    assert f"{str(folder)!r}" in message and "save it again" in message
    assert "\\'" not in message  # printed as written, not as a quoted repr


def test_inside_architecture_only_a_missing_source_is_named(monkeypatch):
    from zoo.encoders.llm import build_llm

    block_sources(monkeypatch)
    with architecture_only({"other": {}}), pytest.raises(KeyError, match="'nowhere/llm'"):
        build_llm("nowhere/llm", 10)


def test_a_timm_folder_with_stage_maps_is_rebuilt_from_its_stored_config(tmp_path, monkeypatch):
    """A CLIP-ConvNeXt-like tower (``features_only``, as Aquila asks) of a timm folder."""
    from zoo.encoders.vision import create_vision_model

    folder = tmp_path / "convnext"
    timm.models.save_for_hf(timm.create_model("zoo_convnext_tiny", num_classes=0), folder)
    built = create_vision_model(str(folder), True, features_only=True, out_indices=(1, 2, 3))
    sources = json.loads(json.dumps(collect_sources(built)))
    shutil.rmtree(folder)
    block_sources(monkeypatch)
    with architecture_only(sources):
        rebuilt = create_vision_model(str(folder), True, features_only=True, out_indices=(1, 2, 3))
    rebuilt.load_state_dict(built.state_dict())
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(built.eval()(image), rebuilt.eval()(image), strict=True):
            assert torch.equal(a, b)
