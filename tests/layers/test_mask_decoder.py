"""Tests for GeoPix's multi-scale mask decoder and its SAM-style two-way block: 4x upscaled
masks, coarse-to-fine scales, learned pooling of the segmentation tokens."""

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
UP = 4  # masks at 4x the token grid (two transposed convolutions)


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
    assert out.logits.shape == (3, 8 * UP, 8 * UP)
    assert out.per_scale.shape == (3, 2, 8 * UP, 8 * UP)
    assert out.initial.shape == (3, 2, 8 * UP, 8 * UP)
    assert torch.equal(out.initial, out.per_scale)  # no memory: final == initial
    resized = _decoder(mask_size=16)(features, cond, TARGET_IMAGE)
    assert resized.logits.shape == (3, 16, 16)
    assert resized.per_scale.shape == (3, 2, 8 * UP, 8 * UP)
    grid = _decoder(upscale_stages=0)(features, cond, TARGET_IMAGE)  # the token grid, as before
    assert grid.per_scale.shape == (3, 2, 8, 8)


def _reversed_scales(decoder: MultiScaleMaskDecoder) -> MultiScaleMaskDecoder:
    """The same decoder with its scales in the opposite order: every per-scale module and
    weight moved from scale ``s`` to ``S - 1 - s``."""
    last = decoder.num_scales - 1
    state = {}
    for name, value in decoder.state_dict().items():
        head, _, rest = name.partition(".")
        if name in ("token_weights", "scale_weights"):
            value = value.flip(0)
        elif rest[:1].isdigit():  # a ModuleList of scales: "mask_mlp.0.2.weight"
            index, _, tail = rest.partition(".")
            name = f"{head}.{last - int(index)}.{tail}"
        state[name] = value
    flipped = MultiScaleMaskDecoder(DIM, num_scales=len(SIDES), coarse_to_fine=False).eval()
    flipped.load_state_dict(state)
    return flipped


def test_permuting_the_scales_permutes_the_outputs() -> None:
    """The largest scale need not come first: it sets the output size wherever it is, and with
    the scales independent (no coarse-to-fine gate) the decoder with its scales reversed, given
    the maps and the conditioning in reverse, gives the same masks, its per-scale masks in
    reverse."""
    features, cond = _inputs()
    out = _decoder()(features[::-1], cond, TARGET_IMAGE)
    assert out.logits.shape == (3, 8 * UP, 8 * UP)
    decoder = _decoder(coarse_to_fine=False)
    with torch.no_grad():  # unequal weights, so that each must follow its scale
        decoder.scale_weights.copy_(torch.tensor([0.7, -0.4]))
        decoder.token_weights.normal_()
        plain = decoder(features, cond, TARGET_IMAGE)
        flipped = _reversed_scales(decoder)(features[::-1], cond.flip(1), TARGET_IMAGE)
    assert flipped.logits.shape == (3, 8 * UP, 8 * UP)
    torch.testing.assert_close(flipped.logits, plain.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flipped.per_scale, plain.per_scale.flip(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flipped.initial, plain.initial.flip(1), atol=1e-5, rtol=1e-5)


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


def _scale_alone(dec: MultiScaleMaskDecoder, scale: int, **kwargs) -> MultiScaleMaskDecoder:
    """A one-scale decoder with the weights of ``dec``'s scale ``scale``."""
    single = MultiScaleMaskDecoder(DIM, num_scales=1, **kwargs).eval()
    for name in (
        "image_attn",
        "image_norm",
        "blocks",
        "final_attn",
        "final_norm",
        "upscalers",
        "mask_mlp",
    ):
        getattr(single, name)[0].load_state_dict(getattr(dec, name)[scale].state_dict())
    with torch.no_grad():
        single.token_weights[0] = dec.token_weights[scale]
    return single


def test_small_scale_is_bilinearly_upsampled() -> None:
    """Scale 1 (the coarsest, decoded first) computed alone, then upsampled."""
    dec = _decoder()
    single = _scale_alone(dec, 1)
    features, cond = _inputs()
    out = dec(features, cond, TARGET_IMAGE)
    small = single([features[1]], cond[:, 1:], TARGET_IMAGE).logits  # T×16×16
    up = F.interpolate(small[:, None], size=(8 * UP, 8 * UP), mode="bilinear", align_corners=False)[
        :, 0
    ]
    torch.testing.assert_close(out.per_scale[:, 1], up, atol=1e-5, rtol=1e-5)


def test_coarse_mask_modulates_the_finer_scale() -> None:
    """Coarse to fine (PixelLM): scale 0 reads x + x·sigmoid(scale 1's mask); without the switch it
    is scale 0 alone."""
    features, cond = _inputs()
    with torch.no_grad():
        coupled = _decoder()(features, cond, TARGET_IMAGE)
        plain = _decoder(coarse_to_fine=False)(features, cond, TARGET_IMAGE)
        alone = _scale_alone(_decoder(), 0)([features[0]], cond[:, :1], TARGET_IMAGE).logits
    torch.testing.assert_close(plain.per_scale[:, 0], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(coupled.per_scale[:, 1], plain.per_scale[:, 1])  # coarsest: no gate
    assert not torch.allclose(coupled.per_scale[:, 0], plain.per_scale[:, 0], atol=1e-4)


def test_token_pooling_learned_starts_at_the_mean_and_moves() -> None:
    features, cond = _inputs()
    learned, mean = _decoder(), _decoder(token_pooling="mean")
    torch.testing.assert_close(
        learned(features, cond, TARGET_IMAGE).logits, mean(features, cond, TARGET_IMAGE).logits
    )
    with torch.no_grad():
        learned.token_weights[0] = torch.tensor([3.0, -1.0, 0.0])
    assert not torch.allclose(
        learned(features, cond, TARGET_IMAGE).per_scale[:, 0],
        mean(features, cond, TARGET_IMAGE).per_scale[:, 0],
        atol=1e-4,
    )


def test_one_token_wide_object_is_recoverable_at_native_resolution() -> None:
    """An object one ViT token wide (14 px at 336 px with CLIP ViT-L/14's 24×24 tokens), half a
    token off the grid, is 4 pixels wide in the native masks (4x the token grid: 96×96 at 336 px).
    Fitted on one image (an 8×8-token crop keeps the test fast), the decoder recovers it
    (IoU > 0.8); at the token grid no mask does better than IoU 0.5 (the object covers half of two
    token columns)."""
    torch.manual_seed(0)
    grid = 8
    side = UP * grid
    target = torch.zeros(1, side, side)
    target[:, 4:28, 14:18] = 1.0  # token rows 1..7, token columns 3.5..4.5
    features = [torch.randn(1, DIM, grid, grid)]
    cond = torch.randn(1, 1, N_TOK, DIM)
    dec = MultiScaleMaskDecoder(DIM, num_scales=1, depth=1)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(60):
        logits = dec(features, cond, torch.tensor([0])).logits
        loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(5.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = dec(features, cond, torch.tensor([0])).logits > 0
    assert pred.shape == (1, side, side)  # the native resolution: 4x the token grid
    iou = float((pred & (target > 0)).sum() / (pred | (target > 0)).sum())
    cell = F.avg_pool2d(target[None], UP)[0]  # the fraction of each token the object covers
    best_grid = max(  # the best token-grid masks: the tokens covered at least half, or at all
        float((cell * m).sum() / (cell.sum() + ((1 - cell) * m).sum()))
        for m in (cell >= 0.5, cell > 0)
    )
    assert best_grid <= 0.5 + 1e-6
    assert iou > 0.8, f"IoU {iou:.3f} at the native resolution"


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


def _sam_block(block: TwoWayBlock, skip_first_layer_pe: bool):
    """Transformers' ``SamTwoWayAttentionBlock`` with ``block``'s weights (the zoo's MLP is
    GELU, its LayerNorms torch's default eps)."""
    from transformers import SamMaskDecoderConfig
    from transformers.models.sam.modeling_sam import SamTwoWayAttentionBlock

    config = SamMaskDecoderConfig(
        hidden_size=DIM, num_attention_heads=4, mlp_dim=4 * DIM, hidden_act="gelu"
    )
    config.layer_norm_eps = 1e-5
    config._attn_implementation = "eager"
    sam = SamTwoWayAttentionBlock(config, 2, skip_first_layer_pe).eval()
    renamed = {
        **{f"norm{i}": f"layer_norm{i}" for i in range(1, 5)},
        "mlp.0": "mlp.lin1",
        "mlp.2": "mlp.lin2",
    }
    state = {}
    for name, value in block.state_dict().items():
        for old, new in renamed.items():
            if name.startswith(old + "."):
                name = new + name[len(old) :]
        state[name] = value
    sam.load_state_dict(state)
    return sam


@pytest.mark.parametrize("skip_first_layer_pe", [False, True])
def test_two_way_block_matches_sams(skip_first_layer_pe: bool) -> None:
    """SAM's block from transformers, with the same random weights, gives the same queries and
    keys (every sublayer, the position embeddings where SAM adds them, the downsampled
    cross-attentions)."""
    torch.manual_seed(0)
    block = TwoWayBlock(DIM, num_heads=4, skip_first_layer_pe=skip_first_layer_pe).eval()
    q, k = torch.randn(3, N_TOK, DIM), torch.randn(3, 20, DIM)
    query_pe, key_pe = torch.randn(3, N_TOK, DIM), torch.randn(20, DIM)
    q2, k2 = block(q, k, query_pe, key_pe)
    assert q2.shape == q.shape and k2.shape == k.shape
    sam = _sam_block(block, skip_first_layer_pe)
    with torch.no_grad():  # SAM's tensors carry a point-batch axis
        sq, sk, _ = sam(q[:, None], k[:, None], query_pe[:, None], key_pe, None)
    torch.testing.assert_close(q2, sq[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k2, sk[:, 0], atol=1e-5, rtol=1e-5)


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
    with pytest.raises(ValueError, match="upscale_stages=3 needs dim=12"):
        MultiScaleMaskDecoder(12, num_scales=2, upscale_stages=3)
    with pytest.raises(ValueError, match="learned pooling 3"):
        dec(features, cond[:, :, :2], TARGET_IMAGE)
