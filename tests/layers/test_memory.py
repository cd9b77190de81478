"""Tests for GeoPix's class-wise learnable memory (CLM)."""

from __future__ import annotations

import pytest
import torch

from zoo.layers.mask_decoder import MultiScaleMaskDecoder
from zoo.layers.memory import ClassWiseMemory, Fusion

DIM = 16
SIDES = (8, 4)
N_TOK = 3
NUM_CLASSES = 3
CAPACITY = 4
TARGET_IMAGE = torch.tensor([0, 0, 1])
CATEGORY = torch.tensor([0, 1, 0])
FUSIONS: tuple[Fusion, ...] = ("conv3d", "argmax", "conv2d")


def _inputs(seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    features = [torch.randn(2, DIM, s, s, generator=gen) for s in SIDES]
    cond = torch.randn(len(TARGET_IMAGE), len(SIDES), N_TOK, DIM, generator=gen)
    return features, cond


def _memory(fusion: Fusion = "conv3d", alpha: float = 0.5) -> ClassWiseMemory:
    torch.manual_seed(1)
    mem = ClassWiseMemory(
        NUM_CLASSES, len(SIDES), DIM, SIDES, capacity=CAPACITY, fusion=fusion, init_std=1.0
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
    return tokens, torch.randn(t, side, side, generator=gen)


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
    assert out.logits.shape == (3, 8, 8)
    assert not torch.allclose(out.per_scale, out.initial, atol=1e-4)


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("scale", [0, 1])
def test_fusion_modes_shape(fusion: Fusion, scale: int) -> None:
    mem = _memory(fusion)
    side = SIDES[scale]
    tokens, mask = _tokens(side)
    out = mem(scale, tokens, mask, CATEGORY)
    assert out.shape == (3, side * side, DIM)
    assert mem.fuse(scale, CATEGORY, tokens).shape == (3, DIM, side, side)


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
    tokens, _ = _tokens(SIDES[1])
    whole = mem.argmax_entry(1, tokens, CATEGORY)  # 3 targets, 3 classes: the whole bank
    single = [mem.argmax_entry(1, tokens[t : t + 1], CATEGORY[t : t + 1]) for t in range(3)]
    assert whole.tolist() == torch.cat(single).tolist()


def test_argmax_picks_most_similar_entry() -> None:
    mem = _memory("argmax")
    side = SIDES[1]
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randn(2, side * side, DIM, generator=gen)
    maps = tokens.transpose(1, 2).reshape(2, DIM, side, side)  # the tokens as D×H×W maps
    with torch.no_grad():
        bank = mem.banks[1]
        bank.normal_(generator=gen)
        bank[2, 1] = -maps[0]  # anti-similar
        bank[2, 3] = 3.0 * maps[0] + 0.01 * torch.randn_like(maps[0])  # most similar for target 0
        bank[0, 2] = 0.5 * maps[1]  # most similar for target 1
    category = torch.tensor([2, 0])
    assert mem.argmax_entry(1, tokens, category).tolist() == [3, 2]
    fused = mem.fuse(1, category, tokens)
    torch.testing.assert_close(fused[0], mem.banks[1][2, 3])
    torch.testing.assert_close(fused[1], mem.banks[1][0, 2])


def test_gradients_reach_bank_and_alpha() -> None:
    mem = _memory("conv3d").train()
    tokens, mask = _tokens(SIDES[0])
    mem(0, tokens, mask, CATEGORY).square().mean().backward()
    assert mem.alpha.grad is not None and mem.alpha.grad.abs() > 0
    grad = mem.banks[0].grad
    assert grad is not None
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() > 0
    assert grad[2].abs().sum() == 0  # class 2 is absent from the batch


def test_decoder_owns_the_memory_it_is_given() -> None:
    mem = _memory()
    dec = _decoder(mem)
    assert dec.memory is mem
    assert {n for n, _ in dec.named_parameters()} >= {f"memory.{n}" for n, _ in mem.named_parameters()}


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
    with pytest.raises(ValueError, match="fusion must be"):
        ClassWiseMemory(2, 1, DIM, 4, fusion="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 sizes for 2 scales"):
        ClassWiseMemory(2, 2, DIM, [4, 4, 4])
    features, cond = _inputs()
    with pytest.raises(ValueError, match="needs the targets' category"):
        _decoder(mem)(features, cond, TARGET_IMAGE)
    with pytest.raises(ValueError, match="memory has 1 scales"):
        MultiScaleMaskDecoder(DIM, num_scales=len(SIDES), memory=ClassWiseMemory(2, 1, DIM, 8))
