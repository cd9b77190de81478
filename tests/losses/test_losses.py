"""Each loss against a plain reference computation written out here."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.losses.contrastive import MAX_LOGIT_SCALE, contrastive_loss, init_logit_scale
from zoo.losses.masked import (
    block_patch_mask,
    mask_text_tokens,
    masked_pixel_loss,
    masked_token_loss,
    patchify,
    pixel_targets,
    random_patch_mask,
)
from zoo.losses.matching import mix_negative_pairs, sample_hard_negatives, sample_random_negatives


def reference_contrastive(a, b, scale):
    """Loop-by-row symmetric InfoNCE."""
    n = len(a)
    a = [x / x.norm() for x in a]
    b = [x / x.norm() for x in b]
    total = 0.0
    for i in range(n):
        row = torch.stack([scale * (a[i] @ b[j]) for j in range(n)])
        col = torch.stack([scale * (a[j] @ b[i]) for j in range(n)])
        total += -(row[i] - torch.logsumexp(row, 0)) - (col[i] - torch.logsumexp(col, 0))
    return total / (2 * n)


def test_contrastive_matches_reference():
    torch.manual_seed(0)
    a, b = torch.randn(7, 5), torch.randn(7, 5)
    scale = init_logit_scale(0.07)
    assert math.isclose(scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    got = contrastive_loss(a, b, scale)
    want = reference_contrastive(a, b, 1 / 0.07)
    assert torch.allclose(got, want, atol=1e-5)


def test_contrastive_logit_scale_clamped_at_ln100():
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    big = torch.tensor(10.0)
    assert torch.allclose(
        contrastive_loss(a, b, big), reference_contrastive(a, b, 100.0), atol=1e-5
    )
    assert math.isclose(MAX_LOGIT_SCALE, math.log(100))


def test_contrastive_perfect_alignment_is_low():
    a = torch.eye(6)
    assert contrastive_loss(a, a, torch.tensor(MAX_LOGIT_SCALE)) < 1e-3
    assert contrastive_loss(a, a.roll(1, 0), torch.tensor(MAX_LOGIT_SCALE)) > 10


def test_patchify_matches_loop():
    image = torch.randn(2, 3, 8, 12)
    patches = patchify(image, (4, 4))
    assert patches.shape == (2, 6, 48)
    k = 0
    for r in range(2):
        for c in range(3):
            want = (
                image[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4].permute(0, 2, 3, 1).reshape(2, -1)
            )
            assert torch.equal(patches[:, k], want)
            k += 1


def test_masked_pixel_loss_only_counts_masked_patches():
    torch.manual_seed(0)
    image = torch.randn(2, 3, 8, 8)
    target = patchify(image, (4, 4))
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    pred = torch.randn_like(target)
    mask = torch.tensor([[True, False, False, True], [False, False, True, False]])
    pred_unmasked_changed = pred.clone()
    pred_unmasked_changed[~mask] += 100.0
    want = torch.stack(
        [((pred[b, i] - target[b, i]) ** 2).mean() for b, i in mask.nonzero()]
    ).mean()
    assert torch.allclose(pixel_targets(image, (4, 4)), target, atol=1e-6)
    assert torch.allclose(masked_pixel_loss(pred, target, mask), want, atol=1e-5)
    assert torch.allclose(masked_pixel_loss(pred_unmasked_changed, target, mask), want, atol=1e-5)


def test_random_patch_mask_ratio_exact():
    mask = random_patch_mask(5, 64, 0.4)
    assert (mask.sum(1) == round(0.4 * 64)).all()
    with pytest.raises(ValueError, match="mask ratio"):
        random_patch_mask(1, 4, 1.5)


def test_mask_text_tokens_bert_recipe():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (64, 40), generator=g)
    special = torch.zeros_like(ids, dtype=torch.bool)
    special[:, 0] = special[:, -1] = True
    masked, labels = mask_text_tokens(ids, special, mask_token_id=4, vocab_size=100, generator=g)
    picked = labels != -100
    assert not picked[special].any()
    assert torch.equal(labels[picked], ids[picked])
    assert torch.equal(masked[~picked], ids[~picked])
    rate = picked.float().sum() / (~special).sum()
    assert 0.13 < rate < 0.17  # 15 %
    to_mask = (masked[picked] == 4).float().mean()
    kept = (masked[picked] == ids[picked]).float().mean()
    assert 0.75 < to_mask < 0.85 and 0.05 < kept < 0.16


def test_mask_text_tokens_always_masks_one():
    ids = torch.tensor([[2, 7, 3]])
    special = torch.tensor([[True, False, True]])
    _, labels = mask_text_tokens(ids, special, 4, 10, probability=1e-9)
    assert labels.tolist() == [[-100, 7, -100]]


def test_hard_negatives_follow_similarity_and_skip_duplicates():
    sim = torch.tensor(
        [[5.0, 4.0, -9.0, 4.0], [0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0], [0.0, 0.0, 0.0, 5.0]]
    )
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 3] = True  # caption 3 duplicates caption 0: never a negative for row 0
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_hard_negatives(sim, same, generator=g) for _ in range(400)])
    assert (draws != torch.arange(4)).all()
    assert (draws[:, 0] == 1).float().mean() > 0.99  # the hardest allowed negative dominates
    assert (draws[:, 0] != 3).all()
    with pytest.raises(ValueError, match="at least 2"):
        sample_hard_negatives(torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.bool))


def _one_hard_negative(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities of a batch with one clear hardest negative per row: the positive at
    0.9, column ``hard[i]`` at 0.6, every other column in [-0.1, 0.1]."""
    g = torch.Generator().manual_seed(seed)
    sim = torch.rand(b, b, generator=g) * 0.2 - 0.1
    sim.fill_diagonal_(0.9)
    hard = (torch.arange(b) + 1 + torch.randint(b - 1, (b,), generator=g)) % b
    sim[torch.arange(b), hard] = 0.6
    return sim, hard


def test_hard_negatives_scaled_by_the_logit_scale_find_the_hardest():
    """At batch 128 chance is 1/127 per draw. With the contrastive logit scale (1/0.07) the
    hardest negative (0.6 against <= 0.1) has weight e^(0.5/0.07) ~ 1270 times any other, so
    about 90 % of draws; the raw cosine softmax (the old rule) is barely above chance."""
    b, trials = 128, 50
    sim, hard = _one_hard_negative(b)
    same = torch.zeros(b, b, dtype=torch.bool)
    g = torch.Generator().manual_seed(1)
    scaled = torch.stack(
        [sample_hard_negatives(sim, same, 1 / 0.07, generator=g) for _ in range(trials)]
    )
    raw = torch.stack([sample_hard_negatives(sim, same, generator=g) for _ in range(trials)])
    chance = 1 / (b - 1)
    hit_scaled = (scaled == hard).float().mean().item()
    hit_raw = (raw == hard).float().mean().item()
    assert hit_scaled > 0.8 > 50 * chance
    assert hit_raw < 3 * chance  # unscaled: indistinguishable from uniform at this size
    assert (scaled != torch.arange(b)).all()
    # Reference: the exact probability of the hardest column under the scaled softmax.
    logits = sim / 0.07
    logits.fill_diagonal_(-float("inf"))
    p_hard = logits.softmax(1)[torch.arange(b), hard].mean().item()
    assert abs(hit_scaled - p_hard) < 0.03


def test_hard_negatives_survive_underflow():
    sim = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])
    same = torch.tensor([[False, False, True], [False, False, False], [True, False, False]])
    draws = sample_hard_negatives(sim, same, 1e6)  # every valid weight underflows to 0
    assert draws[0] == 1 and draws[2] == 1 and draws[1] != 1


def test_random_negative_pairs_follow_flava_rule():
    b, trials = 16, 400
    same = torch.zeros(b, b, dtype=torch.bool)
    same[0, 1] = True  # caption 1 duplicates caption 0
    g = torch.Generator().manual_seed(0)
    rows = torch.arange(b)
    replaced, targets = [], []
    for _ in range(trials):
        text_index, target = mix_negative_pairs(sample_random_negatives(same, g), 0.3, generator=g)
        assert torch.equal(target == 1, text_index == rows)  # a negative never keeps its caption
        replaced.append(text_index)
        targets.append(target)
    targets = torch.stack(targets).float()
    assert abs(1 - targets.mean().item() - 0.3) < 0.02
    assert (torch.stack(replaced)[:, 0] != 1).all()
    negatives = sample_random_negatives(same)
    assert torch.equal(mix_negative_pairs(negatives, 0.0)[1], torch.ones(b, dtype=torch.long))
    with pytest.raises(ValueError, match="itm_negative_probability"):
        mix_negative_pairs(negatives, 1.5)


def test_block_patch_mask_is_beit_like():
    g = torch.Generator().manual_seed(0)
    masks = block_patch_mask(200, (14, 14), 75 / 196, generator=g)
    counts = masks.sum(1)
    assert masks.shape == (200, 196) and counts.max() <= 75 and counts.float().mean() > 70
    # Blocks, not scattered patches: most masked patches have a masked 4-neighbour.
    grid = masks.view(200, 14, 14)
    pad = torch.nn.functional.pad(grid, (1, 1, 1, 1))
    neighbours = pad[:, :-2, 1:-1] | pad[:, 2:, 1:-1] | pad[:, 1:-1, :-2] | pad[:, 1:-1, 2:]
    assert (grid & neighbours).sum() / grid.sum() > 0.95
    scattered = random_patch_mask(200, 196, 75 / 196).view(200, 14, 14)
    pad = torch.nn.functional.pad(scattered, (1, 1, 1, 1))
    neighbours = pad[:, :-2, 1:-1] | pad[:, 2:, 1:-1] | pad[:, 1:-1, :-2] | pad[:, 1:-1, 2:]
    assert (scattered & neighbours).sum() / scattered.sum() < 0.9
    small = block_patch_mask(50, (4, 4), 0.4, generator=g)  # smaller than one 16-patch block
    assert (small.sum(1) >= 1).all() and (small.sum(1) <= 6).all()
    with pytest.raises(ValueError, match="mask ratio"):
        block_patch_mask(1, (4, 4), 0.0)


def test_masked_token_loss_matches_loop():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    codes = torch.randint(7, (3, 5), generator=g)
    mask = torch.rand(3, 5, generator=g) < 0.5
    mask[0, 0] = True
    terms = [
        -torch.log_softmax(logits[i, j], 0)[codes[i, j]]
        for i in range(3)
        for j in range(5)
        if mask[i, j]
    ]
    assert torch.allclose(
        masked_token_loss(logits, codes, mask), torch.stack(terms).mean(), atol=1e-6
    )
