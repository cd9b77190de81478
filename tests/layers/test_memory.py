"""Tests for GeoPix's class-wise learnable memory (CLM): Eqs. 1-3 and the fusions of Table IX."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zoo.layers.attention import sincos_pos_embed_2d
from zoo.layers.mask_decoder import MultiScaleMaskDecoder
from zoo.layers.memory import FUSIONS, ClassWiseMemory, Fusion, fusion_parameters

DIM = 16
MEMORY_DIM = 8  # the bank's own width, not the decoder's
STRIDE = 4  # the decoder's masks are at 4x the token grid
SIDES = (8, 4)
N_TOK = 3
NUM_CLASSES = 3
CAPACITY = 4
TARGET_IMAGE = torch.tensor([0, 0, 1])
CATEGORY = torch.tensor([0, 1, 0])


def _inputs(seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, DIM, s, s, generator=gen) for s in SIDES]
    cond = torch.randn(len(TARGET_IMAGE), len(SIDES), N_TOK, DIM, generator=gen)
    return features, cond


def _memory(fusion: Fusion = "conv3d", alpha: float = 0.5) -> ClassWiseMemory:
    torch.manual_seed(1)
    mem = ClassWiseMemory(
        NUM_CLASSES,
        len(SIDES),
        DIM,
        SIDES,
        capacity=CAPACITY,
        fusion=fusion,
        memory_dim=MEMORY_DIM,
        mask_stride=STRIDE,
        init_std=1.0,
    ).eval()
    with torch.no_grad():
        mem.alpha.fill_(alpha)
    return mem


def _decoder(memory: ClassWiseMemory | None = None) -> MultiScaleMaskDecoder:
    """The same decoder weights with or without a memory (the memory is built outside)."""
    torch.manual_seed(0)
    return MultiScaleMaskDecoder(DIM, num_scales=len(SIDES), memory=memory).eval()


def _tokens(side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    t = len(CATEGORY)
    tokens = torch.randn(t, side * side, DIM, generator=gen)
    return tokens, torch.randn(t, side * STRIDE, side * STRIDE, generator=gen)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_alpha_zero_equals_decoder_without_memory(fusion: Fusion) -> None:
    features, cond = _inputs()
    plain = _decoder()(features, cond, TARGET_IMAGE)
    mem = _memory(fusion, alpha=0.0)
    with_mem = _decoder(mem)(features, cond, TARGET_IMAGE, category=CATEGORY)
    torch.testing.assert_close(with_mem.logits, plain.logits, atol=1e-6, rtol=0)
    torch.testing.assert_close(with_mem.per_scale, with_mem.initial, atol=1e-6, rtol=0)
    tokens, mask = _tokens(SIDES[0])
    assert torch.equal(mem(0, tokens, mask, CATEGORY), tokens)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_memory_changes_decoder_output_when_alpha_nonzero(fusion: Fusion) -> None:
    features, cond = _inputs()
    out = _decoder(_memory(fusion))(features, cond, TARGET_IMAGE, category=CATEGORY)
    assert out.logits.shape == (3, 8 * STRIDE, 8 * STRIDE)
    assert not torch.allclose(out.per_scale, out.initial, atol=1e-4)


def _pointwise_reference(network: torch.nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """The pointwise network over the capacity axis of one class's entries ``N×D_m×H×W``, by
    hand: each 1x1 convolution a matrix product over ``N``, BatchNorm with its running
    statistics (eval), ReLU."""
    x = h
    for layer in network:
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Conv3d)):
            weight = layer.weight.flatten(1)  # out×in
            x = torch.einsum("oc,c...->o...", weight, x) + layer.bias.view(-1, *[1] * (x.ndim - 1))
        elif isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            shape = (-1, *[1] * (x.ndim - 1))
            scale = (layer.running_var + layer.eps).rsqrt() * layer.weight
            x = (x - layer.running_mean.view(shape)) * scale.view(shape) + layer.bias.view(shape)
        else:
            x = layer(x)
    return x[0]  # D_m×H×W


def _fused_reference(mem: ClassWiseMemory, scale: int, c: int, encoded: torch.Tensor):
    """``F(h)`` of one target of class ``c`` whose encoded mask is ``encoded`` (``D_m×H×W``),
    by a plain loop over the bank's entries and positions."""
    h = mem.banks[scale][c]  # N×D_m×H×W
    side = mem.sizes[scale]
    if mem.fusion == "conv3d":  # the N entries are the channels of a D_m×H×W volume
        return _pointwise_reference(mem.fusers[scale], h)
    if mem.fusion == "conv2d":  # one N×H×W image per channel d of the bank
        return torch.stack(
            [_pointwise_reference(mem.fusers[scale], h[:, d]) for d in range(mem.memory_dim)]
        )
    if mem.fusion == "argmax":  # the entry most similar (cosine) to the encoded mask
        similarity = [F.cosine_similarity(e.flatten(), encoded.flatten(), dim=0) for e in h]
        return h[int(torch.stack(similarity).argmax())]
    # Attention: one query per position (its D_m channels), one key per position: the N entries'
    # channels at that position side by side.
    positions = [(i, j) for i in range(side) for j in range(side)]
    query = torch.stack([encoded[:, i, j] for i, j in positions])[None]
    entries = torch.stack([torch.cat([e[:, i, j] for e in h]) for i, j in positions])[None]
    pe = sincos_pos_embed_2d(side, side, mem.memory_dim)
    wide_pe = torch.cat([pe] * mem.capacity, dim=1)
    fuser = mem.fusers[scale]
    if fuser.first is not None:
        entries = entries + fuser.first(entries + wide_pe, query + pe, query)
    fused = fuser.attn(query + pe, entries + wide_pe, entries)[0]  # HW×D_m
    return torch.stack([fused[p] for p in range(len(positions))], dim=1).view(-1, side, side)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("scale", [0, 1])
@pytest.mark.parametrize("category", [CATEGORY, torch.tensor([2, 0])])
def test_each_fusion_matches_a_loop_over_the_targets(
    fusion: Fusion, scale: int, category: torch.Tensor
) -> None:
    """Batched over targets (the whole bank fused once when there are as many targets as
    classes, else each target's slice), every fusion and the memory attention (Eq. 3) give
    what a loop over the targets, their class's entries and the grid positions gives."""
    mem = _memory(fusion)
    with torch.no_grad():  # BatchNorm's running statistics, not the identity's
        for module in mem.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
    side = SIDES[scale]
    tokens, mask = _tokens(side)
    tokens, mask = tokens[: len(category)], mask[: len(category)]
    with torch.no_grad():
        out = mem(scale, tokens, mask, category)
        encoded = mem.encode_mask(scale, mask)
        fused = mem.fuse(scale, category, encoded)
    t = len(category)
    assert out.shape == (t, side * side, DIM)
    assert encoded.shape == (t, MEMORY_DIM, side, side)
    assert fused.shape == (t, MEMORY_DIM, side, side)
    assert mem.banks[scale].shape == (NUM_CLASSES, CAPACITY, MEMORY_DIM, side, side)
    pe, memory_pe = (sincos_pos_embed_2d(side, side, d) for d in (DIM, MEMORY_DIM))
    with torch.no_grad():
        for i, c in enumerate(category.tolist()):
            one_encoded = mem.mask_encoders[scale](mask[i].sigmoid()[None, None])[0]
            torch.testing.assert_close(encoded[i], one_encoded, atol=1e-5, rtol=1e-5)
            reference = _fused_reference(mem, scale, c, one_encoded)
            torch.testing.assert_close(fused[i], reference, atol=1e-5, rtol=1e-5)
            kv = (reference + one_encoded).flatten(1).T[None]  # HW×D_m, row-major
            x = tokens[i][None]
            attended = mem.cross_attn[scale](x + pe, kv + memory_pe, kv)
            torch.testing.assert_close(out[i], (x + 0.5 * attended)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_category_selects_the_class_slice(fusion: Fusion) -> None:
    mem = _memory(fusion)
    tokens, mask = _tokens(SIDES[0])
    base = mem(0, tokens, mask, CATEGORY)
    with torch.no_grad():
        mem.banks[0][1].normal_()  # class 1: only target 1
    out = mem(0, tokens, mask, CATEGORY)
    assert not torch.allclose(out[1], base[1], atol=1e-4)
    torch.testing.assert_close(out[[0, 2]], base[[0, 2]], atol=1e-6, rtol=0)
    with torch.no_grad():
        mem.banks[0][0].normal_()  # class 0: targets 0 and 2
    out2 = mem(0, tokens, mask, CATEGORY)
    assert not torch.allclose(out2[[0, 2]], out[[0, 2]], atol=1e-4)
    torch.testing.assert_close(out2[1], out[1], atol=1e-6, rtol=0)


def test_fused_memory_matches_per_target_reference() -> None:
    """The batched fusion (here the whole bank: as many targets as classes) equals fusing each
    target's own slice."""
    for fusion in ("conv3d", "conv2d"):
        mem = _memory(fusion)  # type: ignore[arg-type]
        fused = mem.fuse(1, CATEGORY)
        for t, c in enumerate(CATEGORY.tolist()):
            one = mem.fuse(1, torch.tensor([c]))
            torch.testing.assert_close(fused[t], one[0], atol=1e-6, rtol=0)
    mem = _memory("argmax")
    _, mask = _tokens(SIDES[1])
    encoded = mem.encode_mask(1, mask)
    whole = mem.argmax_entry(1, encoded, CATEGORY)  # 3 targets, 3 classes: the whole bank
    single = [mem.argmax_entry(1, encoded[t : t + 1], CATEGORY[t : t + 1]) for t in range(3)]
    assert whole.tolist() == torch.cat(single).tolist()


def test_conv_fusions_are_pointwise_over_the_capacity_axis() -> None:
    """Conv3D (entries as channels of a D_m×H×W volume) equals a plain per-position loop of its
    N -> 32 -> 16 -> 1 network (eval-mode BatchNorm) over the N entries, and so does Conv2D."""
    for fusion in ("conv3d", "conv2d"):
        mem = _memory(fusion)  # type: ignore[arg-type]
        net = mem.fusers[0]
        bank = mem.banks[0][1]  # N×D_m×H×W
        expected = torch.empty(bank.shape[1:])
        with torch.no_grad():
            for d in range(bank.shape[1]):
                for y in range(bank.shape[2]):
                    for x in range(bank.shape[3]):
                        v = bank[:, d, y, x]
                        for layer in net:
                            if isinstance(layer, (torch.nn.Conv3d, torch.nn.Conv2d)):
                                v = layer.weight.flatten(1) @ v + layer.bias
                            elif isinstance(layer, (torch.nn.BatchNorm3d, torch.nn.BatchNorm2d)):
                                v = (v - layer.running_mean) / (
                                    layer.running_var + layer.eps
                                ).sqrt()
                                v = v * layer.weight + layer.bias
                            else:
                                v = v.relu()
                        expected[d, y, x] = v[0]
            torch.testing.assert_close(
                mem.fuse(0, torch.tensor([1]))[0], expected, atol=1e-5, rtol=1e-5
            )


def test_attention_fusion_matches_a_per_target_loop() -> None:
    """The attention fusion: each target's encoded mask (HW×D_m) queries its class's entries laid
    out HW×N·D_m, one target at a time."""
    mem = _memory("attention")
    _, mask = _tokens(SIDES[0])
    encoded = mem.encode_mask(0, mask)
    fused = mem.fuse(0, CATEGORY, encoded)
    side = SIDES[0]
    pe = sincos_pos_embed_2d(side, side, MEMORY_DIM)
    for t, c in enumerate(CATEGORY.tolist()):
        h = mem.banks[0][c].permute(2, 3, 0, 1).reshape(side * side, CAPACITY * MEMORY_DIM)
        q = encoded[t].flatten(1).T
        out = mem.fusers[0].attn((q + pe)[None], (h + pe.repeat(1, CAPACITY))[None], h[None])[0]
        torch.testing.assert_close(
            fused[t], out.T.reshape(MEMORY_DIM, side, side), atol=1e-5, rtol=1e-5
        )


def test_fusion_parameter_counts_match_table_ix() -> None:
    """One scale's fusion at the paper's sizes (N = 64, D_m = 64) beside Table IX."""
    paper = {
        "argmax": 0,
        "conv2d": 2.7e3,
        "conv3d": 2.7e3,
        "attention": 532.8e3,
        "dual_attention": 34.6e6,
    }
    for fusion, expected in paper.items():
        count = fusion_parameters(fusion, capacity=64, memory_dim=64)  # type: ignore[arg-type]
        print(f"{fusion:>15}: {count:>12,} learnable parameters (Table IX: {expected:,.0f})")
        assert abs(count - expected) <= 0.1 * expected


def test_argmax_picks_most_similar_entry() -> None:
    mem = _memory("argmax")
    side = SIDES[1]
    gen = torch.Generator().manual_seed(3)
    maps = torch.randn(2, MEMORY_DIM, side, side, generator=gen)  # encoded masks I(m)
    with torch.no_grad():
        bank = mem.banks[1]
        bank.normal_(generator=gen)
        bank[2, 1] = -maps[0]  # anti-similar
        bank[2, 3] = 3.0 * maps[0] + 0.01 * torch.randn_like(maps[0])  # most similar for target 0
        bank[0, 2] = 0.5 * maps[1]  # most similar for target 1
    category = torch.tensor([2, 0])
    assert mem.argmax_entry(1, maps, category).tolist() == [3, 2]
    fused = mem.fuse(1, category, maps)
    torch.testing.assert_close(fused[0], mem.banks[1][2, 3])
    torch.testing.assert_close(fused[1], mem.banks[1][0, 2])


@pytest.mark.parametrize("fusion", ["conv3d", "attention", "dual_attention"])
def test_gradients_reach_bank_and_alpha(fusion: Fusion) -> None:
    # conv3d with BatchNorm's running statistics: in training its batch statistics over the fused
    # bank would also reach the absent class (see ClassWiseMemory._class_slices).
    mem = _memory(fusion).train()
    if fusion == "conv3d":
        mem.fusers.eval()
    tokens, mask = _tokens(SIDES[0])
    mem(0, tokens, mask, CATEGORY).square().mean().backward()
    assert mem.alpha.grad is not None and mem.alpha.grad.abs() > 0
    grad = mem.banks[0].grad
    assert grad is not None
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
    assert grad[2].abs().sum() == 0  # class 2 is absent from the batch


def test_enhanced_features_are_the_residual_of_eq_3() -> None:
    """H_me = x + alpha · CA(x, F(h) + I(m)): linear in alpha, x itself at alpha = 0."""
    tokens, mask = _tokens(SIDES[0])
    outs = [_memory("conv3d", alpha)(0, tokens, mask, CATEGORY) for alpha in (0.0, 1.0, 2.0)]
    assert torch.equal(outs[0], tokens)
    torch.testing.assert_close(outs[2] - tokens, 2 * (outs[1] - tokens), atol=1e-5, rtol=1e-5)


def test_decoder_owns_the_memory_it_is_given() -> None:
    mem = _memory()
    dec = _decoder(mem)
    assert dec.memory is mem
    assert {n for n, _ in dec.named_parameters()} >= {
        f"memory.{n}" for n, _ in mem.named_parameters()
    }


def test_errors() -> None:
    # The range of the categories (category 3 or -1 for a memory of 3 classes) is checked where the
    # batch is made, not in the forward pass: see tests/test_sync_free.py.
    mem = _memory()
    tokens, mask = _tokens(SIDES[0])
    with pytest.raises(ValueError, match="category must be"):
        mem(0, tokens, mask, CATEGORY[:2])
    with pytest.raises(ValueError, match="image_tokens at scale 1"):
        mem(1, tokens, mask, CATEGORY)
    with pytest.raises(ValueError, match="initial_mask"):
        mem(0, tokens, mask[:, :4], CATEGORY)
    with pytest.raises(ValueError, match="scale 2 is out of range"):
        mem(2, tokens, mask, CATEGORY)
    with pytest.raises(ValueError, match="fusion must be one of"):
        ClassWiseMemory(2, 1, DIM, 4, fusion="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mask_stride must be a power of 2"):
        ClassWiseMemory(2, 1, DIM, 4, mask_stride=3)
    with pytest.raises(ValueError, match="memory_dim=6"):
        ClassWiseMemory(2, 1, DIM, 4, memory_dim=6)
    with pytest.raises(ValueError, match="3 sizes for 2 scales"):
        ClassWiseMemory(2, 2, DIM, [4, 4, 4])
    features, cond = _inputs()
    with pytest.raises(ValueError, match="needs the targets' category"):
        _decoder(mem)(features, cond, TARGET_IMAGE)
    with pytest.raises(ValueError, match="memory has 1 scales"):
        MultiScaleMaskDecoder(DIM, num_scales=len(SIDES), memory=ClassWiseMemory(2, 1, DIM, 8))
    with pytest.raises(ValueError, match="mask_stride 1"):
        MultiScaleMaskDecoder(DIM, num_scales=1, memory=ClassWiseMemory(2, 1, DIM, 8))


@pytest.mark.parametrize("fusion", ["conv3d", "conv2d"])
@pytest.mark.parametrize("category", [[0, 2, 2, 1], [2, 0], [1]])
def test_batched_conv_fusion_trains_like_the_modules_on_gathered_slices(
    fusion: Fusion, category: list[int]
) -> None:
    """Training mode (BatchNorm on batch statistics): the batched fusion (matrix products, ReLU
    in place) gives the outputs, the gradients of the bank and of the fusion's weights and the
    running statistics of the plain modules run on the slices gathered one target at a time (the
    whole bank when every class can be present), in the paper's layouts."""
    torch.manual_seed(3)
    mem = ClassWiseMemory(
        NUM_CLASSES, 1, DIM, 4, capacity=6, fusion=fusion, memory_dim=MEMORY_DIM, init_std=1.0
    ).train()
    reference = ClassWiseMemory(
        NUM_CLASSES, 1, DIM, 4, capacity=6, fusion=fusion, memory_dim=MEMORY_DIM
    ).train()
    with torch.no_grad():
        for module in mem.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Conv3d):
                module.weight.normal_()
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 2.0)
                module.bias.normal_()
    reference.load_state_dict(mem.state_dict())
    cat = torch.tensor(category)
    gen = torch.Generator().manual_seed(0)
    grad = torch.randn(len(cat), MEMORY_DIM, 4, 4, generator=gen)
    fused = mem.fuse(0, cat)
    fused.backward(grad)

    bank, net = reference.banks[0], reference.fusers[0]
    whole = len(cat) >= NUM_CLASSES
    slices = bank if whole else torch.stack([bank[c] for c in category])  # K×N×D_m×H×W
    if fusion == "conv3d":
        out = net(slices).squeeze(1)
    else:
        flat = slices.transpose(1, 2).flatten(0, 1)  # (K D_m)×N×H×W, the paper's layout
        out = net(flat).view(len(slices), MEMORY_DIM, 4, 4)
    want = torch.stack([out[c] if whole else out[i] for i, c in enumerate(category)])
    want.backward(grad)

    torch.testing.assert_close(fused, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mem.banks[0].grad, bank.grad, atol=1e-4, rtol=1e-4)
    for got, expected in zip(mem.fusers[0].parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(got.grad, expected.grad, atol=1e-4, rtol=1e-4)
    for (name, got), (_, expected) in zip(
        mem.fusers[0].named_buffers(), net.named_buffers(), strict=True
    ):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=name)
