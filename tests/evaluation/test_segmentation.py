"""UPerNet segmentation over zoo encoders: shapes, freezing, checkpoint loading and learning."""

from __future__ import annotations

import pytest
import torch
from lightning import Trainer, seed_everything
from torch.utils.data import DataLoader

from zoo.data.tokenize import build_tokenizer
from zoo.encoders.zoo_encoders import FusionSpec
from zoo.evaluation import UPerNetSegmentation, load_encoder_checkpoint
from zoo.models import FLAVARS, Aquila
from zoo.models.base import OptimizerConfig

SIZE = 32


def _trainer(**kwargs) -> Trainer:
    args = (
        dict(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            accelerator="cpu",
            devices=1,
        )
        | kwargs
    )
    return Trainer(**args)


def _rectangles(n: int, seed: int, size: int = SIZE) -> list[dict[str, torch.Tensor]]:
    """Noisy images (N(0, 0.5²)) with one bright (+2) rectangle each, a quarter to half the side
    long; the rectangle is class 1, the rest background (0)."""
    g = torch.Generator().manual_seed(seed)
    hw = torch.randint(size // 4, size // 2 + 1, (n, 2), generator=g)
    y0 = (torch.rand(n, generator=g) * (size - hw[:, 0] + 1)).long()[:, None, None]
    x0 = (torch.rand(n, generator=g) * (size - hw[:, 1] + 1)).long()[:, None, None]
    ys, xs = torch.arange(size)[None, :, None], torch.arange(size)[None, None, :]
    inside = (ys >= y0) & (ys < y0 + hw[:, :1, None]) & (xs >= x0) & (xs < x0 + hw[:, 1:, None])
    image = 0.5 * torch.randn(n, 3, size, size, generator=g) + 2.0 * inside[:, None].float()
    return [{"image": i, "semantic_mask": m} for i, m in zip(image, inside.long(), strict=True)]


def _loader(n: int = 4, seed: int = 0, batch_size: int = 2) -> DataLoader:
    return DataLoader(_rectangles(n, seed), batch_size=batch_size)


def _model(**kwargs) -> UPerNetSegmentation:
    torch.manual_seed(0)
    return UPerNetSegmentation(**(dict(image_size=SIZE, decoder_channels=16) | kwargs))


@pytest.mark.parametrize("encoder", ["zoo_vit_tiny", "zoo_convnext_tiny"])
def test_output_matches_input_size(encoder: str) -> None:
    model = _model(vision_encoder=encoder, num_classes=3).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, SIZE, SIZE))
    assert logits.shape == (2, 3, SIZE, SIZE) and logits.dtype == torch.float32
    assert len(model.feature_indices) == 4
    levels = model.neck(model.features(torch.randn(1, 3, SIZE, SIZE)))
    # ViT (8-px patches): simple pyramid 16/8/4/2 cells; ConvNeXt: strides 4..32 -> 8/4/2/1
    expected = [16, 8, 4, 2] if encoder == "zoo_vit_tiny" else [8, 4, 2, 1]
    assert [f.shape[-1] for f in levels] == expected


def _encoder_state(model: UPerNetSegmentation) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.encoder.state_dict().items()}


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_vs_fine_tuned_encoder(frozen: bool) -> None:
    model = _model(freeze_encoder=frozen)
    before = _encoder_state(model)
    decoder_before = model.decoder.fusion_block[0].weight.clone()
    trainer = _trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(model, _loader())
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    after = model.encoder.state_dict()
    unchanged = all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(decoder_before, model.decoder.fusion_block[0].weight)
    if frozen:
        assert unchanged and not optimized & encoder_ids
        assert not model.train().encoder.training  # eval mode survives .train()
        assert not any(p.requires_grad for p in model.encoder.parameters())
    else:
        assert not unchanged and encoder_ids <= optimized
        assert model.train().encoder.training


def _features(encoder: torch.nn.Module, indices: list[int], x: torch.Tensor) -> list[torch.Tensor]:
    return encoder.forward_intermediates(x, indices=indices, intermediates_only=True)


def test_weights_from_a_flavars_checkpoint(tmp_path) -> None:
    torch.manual_seed(1)
    tokenizer = build_tokenizer(None, ["a", "b"], chat=False)
    flavars = FLAVARS(
        image_size=SIZE, tokenizer=tokenizer, embed_dim=32, fusion=FusionSpec(width=32, layers=1)
    ).eval()
    path = tmp_path / "flavars.ckpt"
    torch.save({"state_dict": flavars.state_dict(), "epoch": 3}, path)

    model = _model(vision_checkpoint=str(path)).eval()
    assert model.checkpoint_prefix == "encoders.vision_encoder.model."
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ours = model.features(x)
        theirs = _features(flavars.encoders.vision_encoder.model, model.feature_indices, x)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))

    # A bare timm state dict loads with no prefix.
    plain = tmp_path / "vit.pt"
    torch.save(flavars.encoders.vision_encoder.model.state_dict(), plain)
    assert _model(vision_checkpoint=str(plain)).checkpoint_prefix == ""

    # Checkpoints from before FLAVARS' encoders moved under encoders. (zoo 0.1), and from
    # before its image_encoder was renamed vision_encoder, still load.
    for name in ("vision_encoder", "image_encoder"):
        old = tmp_path / f"flavars-{name}.ckpt"
        state = {
            k.replace("encoders.vision_encoder.", f"{name}.", 1): v
            for k, v in flavars.state_dict().items()
        }
        torch.save({"state_dict": state}, old)
        assert _model(vision_checkpoint=str(old)).checkpoint_prefix == f"{name}.model."

    with pytest.raises(
        ValueError, match=r"prefix 'encoders\.text_encoder\.'.*'encoders\.vision_encoder\.'"
    ):
        _model(vision_checkpoint=str(path), checkpoint_prefix="encoders.text_encoder")
    with pytest.raises(ValueError, match="other shapes.*pos_embed"):
        _model(image_size=48, vision_checkpoint=str(path))


def test_weights_from_an_aquila_checkpoint(tmp_path) -> None:
    """Aquila's encoder is timm features_only (keys ``vision.stages_0.``) truncated to its
    feature_stages (0, 1, 2): those three load exactly; asking for stage 3 is an error."""
    torch.manual_seed(2)
    tokenizer = build_tokenizer(None, ["a", "b"], chat=True)
    aquila = Aquila(tokenizer=tokenizer, class_names=["x", "y"]).eval()
    path = tmp_path / "aquila.ckpt"
    torch.save({"state_dict": aquila.state_dict()}, path)

    model = _model(
        vision_encoder="zoo_convnext_tiny", feature_indices=[0, 1, 2], vision_checkpoint=str(path)
    ).eval()
    assert model.checkpoint_prefix == "vision."
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ours, theirs = model.features(x), aquila.vision(x)
    assert len(ours) == 3 and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    with pytest.raises(ValueError, match=r"lacks .*stages\.3\..*feature_indices"):
        _model(vision_encoder="zoo_convnext_tiny", vision_checkpoint=str(path))


def test_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        _model(vision_checkpoint=str(tmp_path / "nowhere.ckpt"))
    other = tmp_path / "other.ckpt"
    torch.save(
        {"state_dict": {"head.weight": torch.zeros(2), "text.layer.bias": torch.zeros(2)}}, other
    )
    with pytest.raises(ValueError, match=r"no weights of the image encoder.*'text\.layer\.'"):
        _model(vision_checkpoint=str(other))
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {"a": 1}}, bad)
    with pytest.raises(ValueError, match="neither a Lightning checkpoint"):
        load_encoder_checkpoint(torch.nn.Linear(2, 2), bad)


def test_batch_errors() -> None:
    model = _model()
    with pytest.raises(KeyError, match="semantic_mask"):
        model.training_step({"image": torch.randn(2, 3, SIZE, SIZE)}, 0)
    with pytest.raises(ValueError, match="semantic_mask must have shape"):
        model.training_step(
            {"image": torch.randn(2, 3, SIZE, SIZE), "semantic_mask": torch.zeros(2, 8, 8)}, 0
        )


def test_learns_rectangles_beyond_the_all_background_baseline() -> None:
    """Frozen random ConvNeXt + UPerNet, 6 epochs on 64 images: the held-out mIoU must clearly
    beat predicting background everywhere (IoU_bg = background fraction, IoU_fg = 0, so mIoU =
    bg_frac / 2 = 0.425 on this set); it reaches 0.82 (IoU 0.93 background, 0.71 building)."""
    seed_everything(0)
    train, val = _rectangles(64, seed=0), _rectangles(32, seed=1)
    bg_frac = torch.stack([v["semantic_mask"] for v in val]).eq(0).double().mean().item()
    baseline = bg_frac / 2
    model = UPerNetSegmentation(
        "zoo_convnext_tiny",
        image_size=SIZE,
        decoder_channels=32,
        optimizer=OptimizerConfig(lr=1e-2, weight_decay=1e-4, betas=(0.9, 0.999)),
        class_names=["background", "building"],
    )
    trainer = _trainer(max_epochs=6)
    trainer.fit(
        model, DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32)
    )
    miou = float(trainer.callback_metrics["val_miou"])
    assert miou > baseline + 0.2, f"val mIoU {miou:.3f} vs all-background baseline {baseline:.3f}"
    assert float(trainer.callback_metrics["val_iou_building"]) > 0.3

    results = trainer.test(model, DataLoader(val, batch_size=32), verbose=False)[0]
    assert {"test_miou", "test_iou_background", "test_iou_building"} <= results.keys()
    assert results["test_miou"] == pytest.approx(
        (results["test_iou_background"] + results["test_iou_building"]) / 2, abs=1e-6
    )
    assert results["test_miou"] == pytest.approx(miou, abs=1e-6)


def test_a_models_own_encoder_is_used_as_given() -> None:
    """FLAVARS' dense_encoder (a copy of its timm encoder) feeds UPerNet without a checkpoint:
    the maps are the model's own, and the copy leaves the model's encoder untouched."""
    torch.manual_seed(3)
    tokenizer = build_tokenizer(None, ["a", "b"], chat=False)
    flavars = FLAVARS(
        image_size=SIZE, tokenizer=tokenizer, embed_dim=32, fusion=FusionSpec(width=32, layers=1)
    ).eval()
    encoder = flavars.dense_encoder()
    assert encoder is not flavars.encoders.vision_encoder.model
    model = _model(encoder=encoder).eval()
    assert model.encoder is encoder and "encoder" not in model.hparams
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        ours = model.features(x)
        theirs = _features(flavars.encoders.vision_encoder.model, model.feature_indices, x)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    # pruning (the final norm) happened to the copy only
    assert isinstance(model.encoder.norm, torch.nn.Identity)
    assert isinstance(flavars.encoders.vision_encoder.model.norm, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="either encoder .* or vision_checkpoint"):
        _model(encoder=flavars.dense_encoder(), vision_checkpoint="x.ckpt")
    with pytest.raises(ValueError, match="'Linear' has no forward_intermediates"):
        _model(encoder=torch.nn.Linear(2, 2))
