"""Tests for GeoPix's multi-scale mask decoder and its SAM-style two-way block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.mask_decoder import (
    MaskOutput,
    MultiScaleMaskDecoder,
    TwoWayBlock,
    sincos_pos_embed_2d,
)

DIM = 16
SIDES = (8, 4)
N_TOK = 3
TARGET_IMAGE = torch.tensor([0, 0, 1])


def _inputs(seed: int = 0, batch: int = 2) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(batch, DIM, s, s, generator=gen) for s in SIDES]
    cond = torch.randn(len(TARGET_IMAGE), len(SIDES), N_TOK, DIM, generator=gen)
    return features, cond


def _decoder(**kwargs) -> MultiScaleMaskDecoder:
    torch.manual_seed(0)
    return MultiScaleMaskDecoder(DIM, num_scales=len(SIDES), **kwargs).eval()


def test_shapes_and_mask_size() -> None:
    features, cond = _inputs()
    out = _decoder()(features, cond, TARGET_IMAGE)
    assert isinstance(out, MaskOutput)
    assert out.logits.shape == (3, 8, 8)
    assert out.per_scale.shape == (3, 2, 8, 8)
    assert out.initial.shape == (3, 2, 8, 8)
    assert torch.equal(out.initial, out.per_scale)  # no memory: final == initial
    resized = _decoder(mask_size=16)(features, cond, TARGET_IMAGE)
    assert resized.logits.shape == (3, 16, 16)
    assert resized.per_scale.shape == (3, 2, 8, 8)


def test_largest_scale_need_not_come_first() -> None:
    features, cond = _inputs()
    out = _decoder()(features[::-1], cond, TARGET_IMAGE)
    assert out.logits.shape == (3, 8, 8)


def test_target_depends_only_on_own_cond() -> None:
    dec = _decoder()
    features, cond = _inputs()
    base = dec(features, cond, TARGET_IMAGE).logits
    cond2 = cond.clone()
    cond2[0] += torch.randn_like(cond2[0])
    out = dec(features, cond2, TARGET_IMAGE).logits
    assert not torch.allclose(out[0], base[0], atol=1e-4)
    torch.testing.assert_close(out[1:], base[1:], atol=1e-6, rtol=0)


def test_target_depends_only_on_own_image() -> None:
    dec = _decoder()
    features, cond = _inputs()
    base = dec(features, cond, TARGET_IMAGE).logits
    features2 = [f.clone() for f in features]
    for f in features2:
        f[1] += torch.randn_like(f[1])
    out = dec(features2, cond, TARGET_IMAGE).logits
    assert not torch.allclose(out[2], base[2], atol=1e-4)
    torch.testing.assert_close(out[:2], base[:2], atol=1e-6, rtol=0)


def test_final_is_softmax_weighted_sum_of_scales() -> None:
    dec = _decoder()
    with torch.no_grad():
        dec.scale_weights.copy_(torch.tensor([0.3, -1.2]))
    features, cond = _inputs()
    out = dec(features, cond, TARGET_IMAGE)
    w = torch.exp(torch.tensor([0.3, -1.2]))
    w = w / w.sum()
    expected = w[0] * out.per_scale[:, 0] + w[1] * out.per_scale[:, 1]
    torch.testing.assert_close(out.logits, expected, atol=1e-6, rtol=1e-6)


def test_small_scale_is_bilinearly_upsampled() -> None:
    """Scale 1 computed alone (as a one-scale decoder with the same weights), then upsampled."""
    dec = _decoder()
    single = MultiScaleMaskDecoder(DIM, num_scales=1).eval()
    single.blocks[0].load_state_dict(dec.blocks[1].state_dict())
    single.final_attn[0].load_state_dict(dec.final_attn[1].state_dict())
    single.final_norm[0].load_state_dict(dec.final_norm[1].state_dict())
    single.mask_mlp[0].load_state_dict(dec.mask_mlp[1].state_dict())
    features, cond = _inputs()
    out = dec(features, cond, TARGET_IMAGE)
    small = single([features[1]], cond[:, 1:], TARGET_IMAGE).logits  # T×4×4
    up = F.interpolate(small[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out.per_scale[:, 1], up, atol=1e-5, rtol=1e-5)


def test_gradients_reach_cond_features_and_weights() -> None:
    dec = _decoder()
    features, cond = _inputs()
    features = [f.requires_grad_() for f in features]
    cond.requires_grad_()
    dec(features, cond, TARGET_IMAGE).logits.square().mean().backward()
    for g in [cond.grad, *(f.grad for f in features), dec.scale_weights.grad]:
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    missing = [n for n, p in dec.named_parameters() if p.grad is None]
    assert not missing


def test_two_way_block_shapes() -> None:
    block = TwoWayBlock(DIM, num_heads=4)
    q, k = torch.randn(3, N_TOK, DIM), torch.randn(3, 20, DIM)
    q2, k2 = block(q, k, q, torch.randn(20, DIM))
    assert q2.shape == q.shape and k2.shape == k.shape


def test_sincos_embedding() -> None:
    pe = sincos_pos_embed_2d(3, 5, DIM)
    assert pe.shape == (15, DIM)
    assert len(torch.unique(pe, dim=0)) == 15
    with pytest.raises(ValueError, match="dim % 4"):
        sincos_pos_embed_2d(3, 3, 6)


def test_errors() -> None:
    dec = _decoder()
    features, cond = _inputs()
    with pytest.raises(ValueError, match="expected 2 feature maps, got 1"):
        dec(features[:1], cond, TARGET_IMAGE)
    with pytest.raises(ValueError, match=r"features\[1\] must be B×16"):
        dec([features[0], torch.randn(2, 8, 4, 4)], cond, TARGET_IMAGE)
    with pytest.raises(ValueError, match="has batch 3"):
        dec([features[0], torch.randn(3, DIM, 4, 4)], cond, TARGET_IMAGE)
    with pytest.raises(ValueError, match="cond must be"):
        dec(features, cond[:, :1], TARGET_IMAGE)
    with pytest.raises(ValueError, match="cond must be"):
        dec(features, cond[..., :8], TARGET_IMAGE)
    with pytest.raises(ValueError, match="target_image must be"):
        dec(features, cond, TARGET_IMAGE[:2])
    # The range of target_image ("[0, 2)" for 2 images) is checked where the batch is made, not in
    # the forward pass: see tests/test_sync_free.py.
    with pytest.raises(ValueError, match="multiple of 4"):
        MultiScaleMaskDecoder(10, num_scales=2, num_heads=2)
