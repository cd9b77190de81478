"""Every family reads N bands (issue 24): ``in_channels`` reaches each vision side, and a
pretrained RGB stem (timm's models, the zoo's CLIP / LLaVA towers, FLAVA) is adapted by timm's
rule (:func:`timm.models.adapt_input_conv`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import timm
import torch
from timm.models import adapt_input_conv
from transformers import CLIPVisionModel

from tests.encoders.test_llava import clip_config
from tests.models.conftest import prepared
from tests.models.test_flavars_flava import save_tiny_flava
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.datamodules import EmbeddedDataModule, EmbeddedSplits
from zoo.encoders.flava import FlavaEncoders
from zoo.encoders.sources import architecture_only, collect_sources
from zoo.encoders.vision import VisionEncoder, create_vision_model
from zoo.encoders.zoo_encoders import FusionSpec
from zoo.models import FLAVARS, FUSE, Aquila, GeoPix, MemoryConfig


def four_bands(batch: dict) -> dict:
    """The batch with a fourth band (a NIR stand-in: the mean of the three)."""
    image = batch["image"]
    return batch | {"image": torch.cat([image, image.mean(1, keepdim=True)], 1)}


def _trains_on_four_bands(model: torch.nn.Module, batch: dict, stem: torch.Tensor) -> None:
    """A finite training loss on four bands; the fourth band reaches the image features."""
    assert stem.shape[1] == 4
    batch4 = four_bands(batch)
    assert torch.isfinite(model.training_step(batch4, 0))
    model.eval()
    brighter = batch4["image"].clone()
    brighter[:, 3] += 1.0
    with torch.no_grad():
        features = model.image_features(batch4["image"])
        assert not torch.allclose(features, model.image_features(brighter))
    with pytest.raises(RuntimeError, match="channels"):
        model.training_step(batch, 0)  # three bands into a 4-band stem: torch's own error


@pytest.mark.parametrize("family", [Aquila, FUSE])
def test_generators_train_on_a_four_band_batch(dm, batch, family):
    torch.manual_seed(0)
    model = family(tokenizer=dm.tokenizer, class_names=dm.class_names, in_channels=4)
    assert model.hparams.in_channels == 4
    stem = model.vision.stem_0 if family is Aquila else model.vision.patch_embed.proj
    _trains_on_four_bands(model, batch, stem.weight)


def test_geopix_trains_on_a_four_band_batch(tmp_path_factory):
    refs = prepared(
        EmbeddedReferringDataModule(
            str(tmp_path_factory.mktemp("refs4")), splits=EmbeddedSplits(8, 4, 4), batch_size=4
        )
    )
    batch = refs.on_after_batch_transfer(next(iter(refs.val_dataloader())), 0)
    torch.manual_seed(0)
    model = GeoPix(
        tokenizer=refs.tokenizer,
        class_names=refs.class_names,
        memory=MemoryConfig(capacity=4),
        in_channels=4,
    )
    _trains_on_four_bands(model, batch, model.vision.patch_embed.proj.weight)


def test_flavars_trains_on_a_four_band_batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("flavars4")
    data = EmbeddedDataModule(
        str(root), splits=EmbeddedSplits(8, 4, 4), image_size=32, batch_size=4
    )
    data = prepared(data)
    batch = data.on_after_batch_transfer(next(iter(data.train_dataloader())), 0)
    torch.manual_seed(0)
    model = FLAVARS(
        image_size=32,
        embed_dim=32,
        fusion=FusionSpec(width=32, layers=1),
        tokenizer=data.tokenizer,
        class_names=data.class_names,
        in_channels=4,
    )
    assert model.encoders.in_channels == 4
    patch = model.encoders.patch_size
    assert model.encoders.mim_head.out_features == patch[0] * patch[1] * 4  # 4-band pixels
    _trains_on_four_bands(model, batch, model.encoders.vision_encoder.model.patch_embed.proj.weight)


@pytest.mark.parametrize("name", ["zoo_vit_tiny", "zoo_convnext_tiny"])
def test_timm_stems_adapt_by_timms_rule(tmp_path: Path, name: str):
    """A weight file's RGB stem, read by a 4- and a 1-band encoder: timm's adapt_input_conv."""
    rgb = timm.create_model(name, num_classes=0)
    path = tmp_path / "weights.pth"
    torch.save(rgb.state_dict(), path)
    key = "patch_embed.proj.weight" if "vit" in name else "stem.0.weight"
    for bands in (4, 1):
        encoder = VisionEncoder(name, 64, checkpoint_path=str(path), in_chans=bands)
        got = encoder.model.state_dict()[key]
        assert torch.equal(got, adapt_input_conv(bands, rgb.state_dict()[key]))
    assert not torch.equal(adapt_input_conv(4, rgb.state_dict()[key])[:, :3], rgb.state_dict()[key])


def test_clip_and_flava_stems_adapt_by_timms_rule(tmp_path: Path):
    """The zoo's CLIP tower (also LLaVA's) and FLAVA's patch embedding: the same rule; the
    stored architecture rebuilds the adapted shape without the folder."""
    torch.manual_seed(0)
    clip = CLIPVisionModel(clip_config()).eval()
    clip.save_pretrained(tmp_path / "clip")
    rgb = clip.embeddings.patch_embedding.weight.detach()
    for bands in (4, 13, 1):
        tower = create_vision_model(str(tmp_path / "clip"), pretrained=True, in_chans=bands)
        conv = tower.model.embeddings.patch_embedding
        assert torch.equal(conv.weight, adapt_input_conv(bands, rgb)) and conv.in_channels == bands
    image = torch.randn(2, 4, 32, 32)
    tower = create_vision_model(str(tmp_path / "clip"), pretrained=True, in_chans=4)
    sources = collect_sources(tower)
    shutil.rmtree(tmp_path / "clip")
    with architecture_only(sources):
        rebuilt = create_vision_model(str(tmp_path / "clip"), in_chans=4)
    rebuilt.load_state_dict(tower.state_dict())
    assert torch.equal(rebuilt(image), tower(image))

    flava = save_tiny_flava(tmp_path / "flava")
    rgb = flava.flava.image_model.embeddings.patch_embeddings.projection.weight.detach()
    encoders = FlavaEncoders(tmp_path / "flava", in_channels=4)
    conv = encoders.model.image_model.embeddings.patch_embeddings.projection
    assert torch.equal(conv.weight, adapt_input_conv(4, rgb)) and encoders.in_channels == 4
