"""Seams of FLAVARS: the model -> hard-negative sampler, the data -> MLM masking, the encoders
-> image-location loss, and the terms -> the weighted total.

Each test drives the real model (tiny, at initialization) on real batches of the embedded data,
and writes the expected quantity here, not through the code under test.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from tests.seams.conftest import first_batch
from zoo.encoders.zoo_encoders import FusionSpec
from zoo.losses.masked import pixel_targets
from zoo.models import FLAVARS
from zoo.models.flavars import LOSSES, LossWeights, Objectives

#: Every loss off but the ones a test names.
NONE = {name: 0.0 for name in LOSSES}


def flavars(dm, **kwargs: Any) -> FLAVARS:
    """A small FLAVARS in eval mode; keyword arguments naming an objective go into
    ``objectives``."""
    objectives = {k: kwargs.pop(k) for k in list(kwargs) if k in Objectives.__dataclass_fields__}
    torch.manual_seed(0)
    args = (
        dict(
            image_size=dm.image_size,
            embed_dim=64,
            fusion=FusionSpec(width=64, layers=1),
            objectives=Objectives(**objectives),
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
        )
        | kwargs
    )
    return FLAVARS(**args).eval()


def _planted(b: int, dim: int, i: int, j: int) -> tuple[Tensor, Tensor]:
    """Random image and text embeddings with caption ``j`` a near-duplicate of image ``i``."""
    g = torch.Generator().manual_seed(3)
    image, text = torch.randn(b, dim, generator=g), torch.randn(b, dim, generator=g)
    text[j] = image[i] + 0.01 * torch.randn(dim, generator=g)
    return image, text


def _scaled_probability(
    image: Tensor, text: Tensor, scale: float, i: int, j: int, same: Tensor
) -> float:
    """``softmax(scale · cos)`` of column ``j`` in row ``i``, over the columns that are neither
    ``i`` itself nor a duplicate caption of it."""
    sim = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    logits = scale * sim[i]
    logits[i] = -math.inf
    logits[same[i]] = -math.inf
    return logits.softmax(0)[j].item()


def _hits(
    model: FLAVARS, batch: dict, image: Tensor, text: Tensor, i: int, j: int, draws: int
) -> tuple[float, float]:
    """Fraction of ``draws`` in which image ``i`` got caption ``j`` as its negative and caption
    ``j`` got image ``i`` (ALBEF's layout: rows ``B..2B`` pair each image with its negative
    caption, rows ``2B..3B`` each caption with its negative image)."""
    b = len(image)
    text_hits = image_hits = 0
    with torch.no_grad():
        for _ in range(draws):
            draw = model.draw_masks(batch, image, text)
            text_hits += int(draw.text_index[b + i] == j)
            image_hits += int(draw.image_index[2 * b + j] == i)
    return text_hits / draws, image_hits / draws


def test_hard_sampler_gets_the_logit_scaled_similarities(image_text_dm):
    """Plant caption ``j`` as a near-duplicate of image ``i`` (cosine 1.0) in a batch of 16 with
    random other embeddings (cosines about ±0.1 in 64 dimensions).

    Chance (uniform negatives) is 1/15 = 6.7 %; the unscaled cosine softmax gives the planted
    caption 15.8 %; at the model's initial logit scale 1/0.07 the exact probability is 0.99996
    (measured: 300/300 draws both ways). With the logit scale set to ln 3 the draws must follow
    ``softmax(3 · cos)`` (exact probability computed here: 0.554 text side, 0.568 image side;
    measured 0.555 and 0.573 over 1500 draws), which a scale left out (e.g. a constant
    1/0.07), not exponentiated, or a matrix transposed does not give."""
    model = flavars(image_text_dm, itm_layout="albef", itm_negatives="hard", mim_masking="random")
    batch = first_batch(image_text_dm, "train")
    b = len(batch["image"])
    i, j = 3, 11
    same = (batch["input_ids"][:, None, :] == batch["input_ids"][None, :, :]).all(-1)
    assert not same[i, j]
    image, text = _planted(b, 64, i, j)
    torch.manual_seed(0)
    chance = 1 / (b - int(same[i].sum()))  # same[i] holds i itself
    unscaled = _scaled_probability(image, text, 1.0, i, j, same)
    assert unscaled < 3 * chance  # the test can tell the scale apart
    text_rate, image_rate = _hits(model, batch, image, text, i, j, 300)
    assert text_rate > 0.97 and image_rate > 0.97, (text_rate, image_rate, chance)
    with torch.no_grad():
        model.encoders.logit_scale.fill_(math.log(3.0))
    want = _scaled_probability(image, text, 3.0, i, j, same)
    want_image = _scaled_probability(text, image, 3.0, j, i, same.T)
    assert 0.35 < want < 0.8 and abs(want - unscaled) > 0.2
    text_rate, image_rate = _hits(model, batch, image, text, i, j, 1500)
    # binomial standard deviation at p ~ 0.56, n = 1500: 0.013
    assert abs(text_rate - want) < 0.05, (text_rate, want)
    assert abs(image_rate - want_image) < 0.05, (image_rate, want_image)


def test_flava_layout_pairs_each_image_with_its_hard_caption(image_text_dm):
    """``itm_layout: flava`` with every caption replaced (probability 1): image ``i``'s pair is its
    hardest caption (the planted near-duplicate ``j``), drawn from the image->text side of the
    sampler (the text->image side would give image ``i`` a caption index chosen for caption
    ``i``). Chance 1/15; measured 300/300."""
    model = flavars(
        image_text_dm,
        itm_layout="flava",
        itm_negatives="hard",
        itm_negative_probability=1.0,
        mim_masking="random",
    )
    batch = first_batch(image_text_dm, "train")
    b = len(batch["image"])
    i, j = 3, 11
    image, text = _planted(b, 64, i, j)
    torch.manual_seed(0)
    hits = 0
    with torch.no_grad():
        for _ in range(300):
            draw = model.draw_masks(batch, image, text)
            assert draw.image_index is None and not draw.itm_target.any()
            hits += int(draw.text_index[i] == j)
    assert hits / 300 > 0.97, hits


def test_a_duplicate_caption_is_never_a_negative(image_text_dm):
    """Caption ``j`` made a copy of caption ``i`` (the same token ids) and planted as image ``i``'s
    hardest: the model hands the sampler its duplicate mask, so ``j`` is never ``i``'s negative
    (it would be a false negative) over 300 draws, where without the mask it would be every one."""
    model = flavars(image_text_dm, itm_layout="albef", itm_negatives="hard", mim_masking="random")
    batch = dict(first_batch(image_text_dm, "train"))
    i, j = 3, 11
    for key in ("input_ids", "attention_mask"):
        batch[key] = batch[key].clone()
        batch[key][j] = batch[key][i]
    b = len(batch["image"])
    image, text = _planted(b, 64, i, j)
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(300):
            draw = model.draw_masks(batch, image, text)
            assert draw.text_index[b + i] != j and draw.image_index[2 * b + j] != i


def test_random_negatives_are_uniform_whatever_the_similarities(image_text_dm):
    """``itm_negatives: random`` (FLAVA's) must ignore the similarities: the planted caption is
    drawn at chance (1/15 = 6.7 %; measured 7.3 % over 1500 draws)."""
    model = flavars(image_text_dm, itm_layout="albef", itm_negatives="random", mim_masking="random")
    batch = first_batch(image_text_dm, "train")
    b = len(batch["image"])
    image, text = _planted(b, 64, 3, 11)
    torch.manual_seed(0)
    text_rate, _ = _hits(model, batch, image, text, 3, 11, 1500)
    assert abs(text_rate - 1 / (b - 1)) < 0.03


def test_compute_losses_hands_the_sampler_the_image_and_text_embeddings(image_text_dm):
    """``compute_losses`` gives ``draw_masks`` the unmasked pass's image and text embeddings (their
    cosine similarities equal those of ``encode_image`` and ``encode_text``), not another pair."""
    model = flavars(image_text_dm)
    batch = first_batch(image_text_dm, "train")
    seen: list[tuple[Tensor, Tensor]] = []
    draw_masks = model.draw_masks

    def spy(batch: dict, image_emb: Tensor, text_emb: Tensor):
        seen.append((image_emb, text_emb))
        return draw_masks(batch, image_emb, text_emb)

    model.draw_masks = spy
    with torch.no_grad():
        model.compute_losses(batch)
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    ((image_emb, text_emb),) = seen
    got = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    torch.testing.assert_close(got, image @ text.T)


def test_mlm_never_labels_or_masks_a_special_or_padding_token(image_text_dm):
    """Over 200 maskings of each of three real batches (the two training batches and one
    validation batch; captions of different lengths, so with padding): a label is set only where
    the token is a real word (attention 1, not [CLS], [SEP], [PAD], [MASK], [UNK] or another
    special id), it equals the original id there, and no special or padding position is altered
    in the masked ids. About 15 % of the words are picked (measured 14.9 % of 107,000)."""
    model = flavars(image_text_dm, mim_masking="random")
    tokenizer = image_text_dm.tokenizer
    special_ids = torch.tensor(tokenizer.all_special_ids)
    picked = eligible = 0
    torch.manual_seed(0)
    for raw in [*image_text_dm.train_dataloader(), next(iter(image_text_dm.val_dataloader()))]:
        batch = image_text_dm.on_after_batch_transfer(raw, 0)
        ids, attention = batch["input_ids"], batch["attention_mask"]
        special = (attention == 0) | torch.isin(ids, special_ids)
        assert (ids == tokenizer.cls_token_id).any() and (ids == tokenizer.sep_token_id).any()
        assert (attention == 0).any()  # padding present
        image_emb = torch.randn(len(ids), 64)
        with torch.no_grad():
            for _ in range(200):
                draw = model.draw_masks(batch, image_emb, image_emb)
                labelled = draw.mlm_labels != -100
                assert not (labelled & special).any(), "a special or padding token was labelled"
                assert torch.equal(draw.mlm_labels[labelled], ids[labelled])
                assert torch.equal(draw.input_ids[special], ids[special])
                picked += int(labelled.sum())
                eligible += int((~special).sum())
    assert 0.13 < picked / eligible < 0.17, picked / eligible


def _infonce(a: Tensor, b: Tensor, log_scale: Tensor) -> Tensor:
    """CLIP's symmetric cross-entropy of ``exp(log_scale) · a·bᵀ`` (unit rows), written out."""
    logits = log_scale.exp() * a @ b.T
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@pytest.mark.parametrize("location_scale", [None, 5.0])
def test_location_loss_is_plain_infonce(image_text_dm, location_scale):
    """The image-location loss equals the InfoNCE of the model's unit image embeddings
    (``encode_image``) and unit location embeddings (``encode_location`` of the batch's (lat,
    lon)), at the model's own location logit scale: at initialization (where it equals the
    image-text scale) and set apart from it (5 against 1/0.07), so the image-text scale fed to
    it fails."""
    model = flavars(image_text_dm, loss_weights=LossWeights(**NONE | {"location": 1.0}))
    if location_scale is not None:
        with torch.no_grad():
            model.location_logit_scale.fill_(math.log(location_scale))
    batch = first_batch(image_text_dm, "train")
    with torch.no_grad():
        losses = model.compute_losses(batch)
        image = model.encode_image(batch["image"])
        location = model.encode_location(batch["location"])
        want = _infonce(image, location, model.location_logit_scale)
        # (lon, lat) is out of range for encode_location, which checks its input: the
        # unchecked embedding the training and validation passes use.
        flipped = model._location_embedding(batch["location"].flip(-1))
        swapped = _infonce(image, flipped, model.location_logit_scale)
    torch.testing.assert_close(losses["location"], want)
    assert abs(float(want - swapped)) > 1e-4  # the test would see (lat, lon) read as (lon, lat)
    assert set(losses) == {"location", "loss"}


def test_contrastive_loss_is_plain_infonce(image_text_dm):
    """The image-text loss likewise: InfoNCE of ``encode_image`` and ``encode_text`` at
    ``logit_scale`` (set to ln 5 so the location scale fed to it fails)."""
    model = flavars(image_text_dm, loss_weights=LossWeights(**NONE | {"contrastive": 1.0}))
    with torch.no_grad():
        model.encoders.logit_scale.fill_(math.log(5.0))
    batch = first_batch(image_text_dm, "train")
    with torch.no_grad():
        losses = model.compute_losses(batch)
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(
        losses["contrastive"], _infonce(image, text, model.encoders.logit_scale)
    )


def test_total_is_the_weighted_sum_of_the_terms(image_text_dm):
    """``loss`` = Σ weight · term with every term on and distinct weights (a term left out, a
    weight given to another term, or a weight ignored changes the sum)."""
    weights = dict(zip(LOSSES, (0.5, 1.5, 2.0, 0.25, 3.0, 0.75, 1.25), strict=True))
    model = flavars(image_text_dm, loss_weights=LossWeights(**weights))
    batch = first_batch(image_text_dm, "train")
    with torch.no_grad():
        losses = model.compute_losses(batch)
    assert set(losses) == {*LOSSES, "loss"}
    want = sum(weights[name] * losses[name] for name in LOSSES)
    torch.testing.assert_close(losses["loss"], want)


def test_masked_multimodal_losses_count_the_positive_pairs_only(image_text_dm):
    """MMM (FLAVA): the heads on the fused states of the matching pairs are scored on the masked
    tokens and patches of the *positive* pairs only (a negative pair's caption does not describe
    its image). Recomputed here from the heads' own outputs and the draw, with positives and
    negatives both present."""
    model = flavars(
        image_text_dm, loss_weights=LossWeights(**NONE | {"mmm_text": 1.0, "mmm_image": 1.0})
    )
    batch = first_batch(image_text_dm, "train")
    outputs: dict[str, Tensor] = {}
    handles = [
        model.encoders.mmm_text_head.register_forward_hook(
            lambda m, a, o: outputs.__setitem__("text", o)
        ),
        model.encoders.mmm_image_head.register_forward_hook(
            lambda m, a, o: outputs.__setitem__("image", o)
        ),
    ]
    torch.manual_seed(0)
    try:
        with torch.no_grad():
            image_emb, text_emb = torch.randn(2, len(batch["image"]), 64)
            draw = model.draw_masks(batch, image_emb, text_emb)
            assert 0 < int(draw.itm_target.sum()) < len(draw.itm_target)  # both kinds of pair
            losses = model.compute_losses(batch, draw)
    finally:
        for handle in handles:
            handle.remove()
    positive = draw.itm_target == 1
    labels = draw.mlm_labels[draw.text_index]
    counted = (labels != -100) & positive[:, None]
    want_text = F.cross_entropy(outputs["text"][counted].float(), labels[counted])
    torch.testing.assert_close(losses["mmm_text"], want_text)
    image_rows = torch.arange(len(batch["image"])) if draw.image_index is None else draw.image_index
    patches = draw.patches[image_rows] & positive[:, None]
    targets = pixel_targets(batch["image"], model.patch_size)[image_rows]
    want_image = (outputs["image"] - targets).pow(2).mean(-1)[patches].mean()
    torch.testing.assert_close(losses["mmm_image"], want_image)
