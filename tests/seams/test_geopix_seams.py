"""Seams of GeoPix: the LLM -> mask decoder conditioning, the decoder <-> class-wise memory
(the paper's Eqs. 1-3), and the training loss (text cross-entropy + BCE + Dice).

What the paper and its lineage fix, and these tests check from the model's own outputs:

* **Conditioning.** The mask decoder is conditioned on the LLM's *last-layer* hidden state
  (``hidden_states[-1]``, after the final norm, as LISA reads ``output_hidden_states[-1]``) at
  the position that *predicts* each segmentation token (LISA's ``seg_token_mask`` shifted by
  one; ``seg_hidden="predicting"``). A phrase's ``S·N`` tokens are ``[SEG0_0] ... [SEG{S-1}_{N-1}]``
  and the token ``[SEG{s}_i]`` conditions scale ``s`` (``feature_layers[s]``, finest first).
* **Memory (Eqs. 2-3).** ``H_me = SA(F) + alpha · CA(SA(F), I(m_init) + F(h))`` per scale, with
  ``h`` the target's class slice of the bank (Eq. 1), and the scale's final mask is predicted
  again from ``H_me``; the masks of the scales are summed with ``softmax(w)`` weights.
* **Loss.** ``text CE + bce_weight · BCE + dice_weight · Dice`` (LISA's 1, 2.0, 0.5; the paper
  states no loss equation), the mask terms averaged over targets.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.layers.attention import sincos_pos_embed_2d
from zoo.models import GeoPix, MaskDecoderConfig, MaskLossWeights, MemoryConfig


def geopix(dm, **kwargs: Any) -> GeoPix:
    torch.manual_seed(0)
    kwargs.setdefault("memory", MemoryConfig(capacity=4))
    return GeoPix(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        **kwargs,
    ).eval()


def _num_visual(model: GeoPix, batch: dict) -> int:
    return model.visual_tokens(batch["image"])[0].shape[1]


def _image_position(model: GeoPix, ids: Tensor) -> int:
    (where,) = (ids == model.image_token_id).nonzero(as_tuple=True)
    assert len(where) == 1
    return int(where[0])


def _spliced_labels(model: GeoPix, batch: dict, n: int) -> Tensor:
    """The labels after the ``<image>`` token became ``n`` visual tokens (-100 on them), built
    one sample at a time."""
    rows = []
    for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True):
        p = _image_position(model, ids)
        rows.append(torch.cat([labels[:p], torch.full((n,), -100), labels[p + 1 :]]))
    return torch.stack(rows)


def _targets_by_hand(batch: dict) -> tuple[Tensor, Tensor]:
    """Valid target masks and categories in answer order (image by image, slot by slot)."""
    masks, categories = [], []
    for b in range(len(batch["mask"])):
        for k in range(batch["mask"].shape[1]):
            if batch["mask_valid"][b, k]:
                masks.append(batch["mask"][b, k].float())
                categories.append(int(batch["category"][b, k]))
    return torch.stack(masks), torch.tensor(categories)


def _predicting_positions(model: GeoPix, batch: dict, n: int) -> list[list[tuple[int, int]]]:
    """Per target (answer order), the (row, position) in the spliced sequence of the hidden
    state that predicts each of its ``S·N`` segmentation tokens."""
    seg = set(model.seg_token_ids.tolist())
    per_target: list[list[tuple[int, int]]] = []
    for b, ids in enumerate(batch["input_ids"]):
        image = _image_position(model, ids)
        found = [q for q, token in enumerate(ids.tolist()) if token in seg]
        assert len(found) % model.tokens_per_target == 0
        for start in range(0, len(found), model.tokens_per_target):
            phrase = found[start : start + model.tokens_per_target]
            # in the spliced sequence the token sits N - 1 further; the state before it predicts it
            per_target.append([(b, q + n - 1 - 1) for q in phrase if q > image])
    return per_target


@pytest.mark.parametrize(("bce_weight", "dice_weight"), [(2.0, 0.5), (0.75, 3.0)])
def test_training_loss_is_text_ce_plus_weighted_bce_and_dice(
    referring_dm, referring_batch, monkeypatch, bce_weight, dice_weight
):
    """Each term computed here from the model's own logits and mask logits: the next-token
    cross-entropy over the answer tokens (labels shifted by one, -100 on the visual tokens),
    the per-target BCE and Dice means; the returned loss and the logged terms must equal them."""
    batch = referring_batch
    model = geopix(
        referring_dm,
        loss_weights=MaskLossWeights(bce=bce_weight, dice=dice_weight),
    )
    logged: dict[str, Tensor] = {}
    monkeypatch.setattr(model, "log", lambda name, value, **_: logged.__setitem__(name, value))
    monkeypatch.setattr(model, "log_dict", lambda values, **_: logged.update(values))
    with torch.no_grad():
        loss = model.training_step(batch, 0)
        targets, category = _targets_by_hand(batch)
        out, masks, _ = model.forward_with_masks(
            batch, batch["input_ids"], batch["attention_mask"], None, category
        )
    labels = _spliced_labels(model, batch, _num_visual(model, batch))
    logits = out.logits
    assert logits.shape[:2] == labels.shape
    text = F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
    )
    assert masks.shape == targets.shape
    flat, goal = masks.flatten(1).float(), targets.flatten(1)
    bce = torch.stack(
        [F.binary_cross_entropy_with_logits(m, t) for m, t in zip(flat, goal, strict=True)]
    ).mean()
    p = flat.sigmoid()
    dice = (1 - (2 * (p * goal).sum(1) + 1) / (p.sum(1) + goal.sum(1) + 1)).mean()
    want = text + bce_weight * bce + dice_weight * dice
    for name, value in (("train_text_loss", text), ("train_bce", bce), ("train_dice", dice)):
        torch.testing.assert_close(logged[name].float(), value, rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(loss.float(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logged["train_loss"].float(), want, rtol=1e-5, atol=1e-6)
    # each term is large enough that dropping it is seen
    assert min(text, bce_weight * bce, dice_weight * dice) > 1e-3


def _capture(module: torch.nn.Module, calls: list) -> Any:
    return module.register_forward_hook(lambda m, args, output: calls.append((args, output)))


def test_memory_is_eqs_2_and_3_and_feeds_the_final_masks(referring_dm, referring_batch):
    """Every memory call inside the model (one per scale) computed by hand: ``I(m_init)`` by the
    memory encoder on ``sigmoid(m_init)``, ``F(h)`` by the fusion network on the target's class
    slice of the bank, ``H_me = x + alpha · CA(x + pe, kv + pe, kv)`` with ``kv = I + F``;
    then the decoder's own seams: the memory receives the self-attended features of the scale
    (gated by the coarser mask), that scale's initial mask and the targets' categories; the
    scale's final mask is predicted from ``H_me``; the output is the ``softmax(w)``-weighted sum."""
    batch = referring_batch
    model = geopix(referring_dm)
    memory, decoder = model.memory, model.decoder
    assert memory is not None
    with torch.no_grad():
        memory.alpha.fill_(0.7)  # the residual is material
        decoder.scale_weights.copy_(torch.tensor([0.3, -0.4]))
    calls: list = []
    outputs: list = []
    handles = [_capture(memory, calls), _capture(decoder, outputs)]
    _, category = _targets_by_hand(batch)
    try:
        with torch.no_grad():
            _, cond, features, target_image = model.conditions(
                batch, batch["input_ids"], batch["attention_mask"], None
            )
            model.decode_masks(cond, features, target_image, category)
    finally:
        for handle in handles:
            handle.remove()
    ((_, result),) = outputs
    scales = len(model.feature_layers)
    assert [args[0] for args, _ in calls] == list(reversed(range(scales)))  # coarse to fine
    coarser = None
    with torch.no_grad():
        for (scale, x, initial, cat), enhanced in calls:
            assert torch.equal(cat, category)
            h, w = features[scale].shape[-2:]
            want_x = decoder.self_attend(scale, features[scale])[target_image]
            if coarser is not None:
                gate = F.interpolate(
                    coarser[:, None], size=(h, w), mode="bilinear", align_corners=False
                )
                want_x = want_x + want_x * gate.flatten(1).sigmoid()[..., None]
            torch.testing.assert_close(x, want_x)
            torch.testing.assert_close(initial, decoder.predict(scale, x, cond[:, scale], (h, w)))
            # Eq. 2: I(m_init) + F(h), F over the N entries of the target's class slice (Eq. 1)
            encoded = memory.mask_encoders[scale](initial.sigmoid()[:, None])
            fused = torch.cat(
                [
                    memory.fusers[scale](memory.banks[scale][int(c)][None]).squeeze(1)
                    for c in category
                ]
            )
            assert fused.abs().amax() > 1e-3 and encoded.abs().amax() > 1e-3
            kv = (fused + encoded).flatten(2).transpose(1, 2)
            attended = memory.cross_attn[scale](
                x + sincos_pos_embed_2d(h, w, memory.dim, x.device, x.dtype),
                kv + sincos_pos_embed_2d(h, w, memory.memory_dim, x.device, x.dtype),
                kv,
            )
            # Eq. 3: the residual with the learnable alpha
            torch.testing.assert_close(enhanced, x + memory.alpha * attended, rtol=1e-5, atol=1e-5)
            final = decoder.predict(scale, enhanced, cond[:, scale], (h, w))
            size = result.per_scale.shape[-2:]
            resized = F.interpolate(
                final[:, None], size=size, mode="bilinear", align_corners=False
            )[:, 0]
            torch.testing.assert_close(result.per_scale[:, scale], resized)
            coarser = final
        weights = decoder.scale_weights.softmax(0)
        fused_masks = torch.einsum("s,tshw->thw", weights, result.per_scale)
        fused_masks = F.interpolate(
            fused_masks[:, None],
            size=result.logits.shape[-2:],
            mode="bilinear",
            align_corners=False,
        )[:, 0]
        torch.testing.assert_close(result.logits, fused_masks)


def test_memory_is_read_at_the_ground_truth_class_in_training_and_the_text_class_in_evaluation(
    referring_dm, referring_batch, monkeypatch
):
    """The class each memory call receives (one call per scale): in training each target's
    ground-truth category; in validation first the class its referring expression names (the
    reported mIoU), then the ground truth (the ``oracle_`` metrics). At initialization the class
    read changes the masks by about 1e-6 only, so the loss cannot tell; the call can."""
    model = geopix(referring_dm)
    monkeypatch.setattr(model, "log", lambda *a, **k: None)
    monkeypatch.setattr(model, "log_dict", lambda *a, **k: None)
    named = torch.tensor(
        [
            min((s.lower().find(c), k) for k, c in enumerate(model.class_names) if c in s.lower())[
                1
            ]
            for sentences in referring_batch["sentences"]
            for s in sentences
        ]
    )
    # ground truth that disagrees with the text everywhere (on the embedded data they agree)
    batch = dict(referring_batch)
    batch["category"] = torch.where(
        batch["mask_valid"], (batch["category"] + 1) % len(model.class_names), batch["category"]
    )
    _, category = _targets_by_hand(batch)
    assert (named != category).all()
    calls: list = []
    handle = _capture(model.memory, calls)
    scales = len(model.feature_layers)
    try:
        with torch.no_grad():
            model.training_step(batch, 0)
            assert len(calls) == scales
            assert all(torch.equal(args[3], category) for args, _ in calls)
            calls.clear()
            model.validation_step(batch, 0)
    finally:
        handle.remove()
    assert len(calls) == 2 * scales
    assert all(torch.equal(args[3], named) for args, _ in calls[:scales])
    assert all(torch.equal(args[3], category) for args, _ in calls[scales:])


def _perturb_last_hidden(model: GeoPix, where: list[tuple[int, int]], amount: float = 3.0) -> Any:
    """Add ``amount`` to the LLM's last-layer hidden state (the final norm's output, which is
    ``hidden_states[-1]``) at the (row, position) pairs ``where``."""
    rows = torch.tensor([r for r, _ in where], dtype=torch.long)
    cols = torch.tensor([c for _, c in where], dtype=torch.long)

    def hook(module: torch.nn.Module, args: tuple, output: Tensor) -> Tensor:
        output = output.clone()
        output[rows, cols] += amount
        return output

    return model.llm.model.norm.register_forward_hook(hook)


def _decoded(model: GeoPix, batch: dict, category: Tensor) -> Any:
    outputs: list = []
    handle = _capture(model.decoder, outputs)
    try:
        with torch.no_grad():
            model.forward_with_masks(
                batch, batch["input_ids"], batch["attention_mask"], None, category
            )
    finally:
        handle.remove()
    return outputs[0][1]


def _changed(a: Tensor, b: Tensor) -> Tensor:
    """Per target (first dimension): whether anything differs."""
    return (a != b).flatten(1).any(1)


def test_mask_decoder_reads_the_last_hidden_state_predicting_each_seg_token(
    referring_dm, referring_batch
):
    """Perturbing the last-layer hidden state at every position *except* those predicting the
    segmentation tokens leaves every mask bit-identical; perturbing the predicting positions of
    one target changes that target's mask only. A conditioning read at the token itself, at an
    unshifted position, from another layer's hidden state or from another target's phrase fails."""
    batch = referring_batch
    model = geopix(referring_dm)
    _, category = _targets_by_hand(batch)
    n = _num_visual(model, batch)
    predicting = _predicting_positions(model, batch, n)
    assert len(predicting) == len(category) and all(
        len(p) == model.tokens_per_target for p in predicting
    )
    base = _decoded(model, batch, category).logits
    b, t = batch["input_ids"].shape[0], batch["input_ids"].shape[1] + n - 1
    chosen = {pair for target in predicting for pair in target}
    others = [(r, c) for r in range(b) for c in range(t) if (r, c) not in chosen]
    handle = _perturb_last_hidden(model, others)
    try:
        assert torch.equal(_decoded(model, batch, category).logits, base)
    finally:
        handle.remove()
    for index in (0, len(predicting) - 1):  # the first target, and the last one of the batch
        handle = _perturb_last_hidden(model, predicting[index])
        try:
            moved = _changed(_decoded(model, batch, category).logits, base)
        finally:
            handle.remove()
        want = torch.zeros(len(predicting), dtype=torch.bool)
        want[index] = True
        assert torch.equal(moved, want), f"target {index}: changed {moved.tolist()}"


def test_seg_token_s_conditions_scale_s(referring_dm, referring_batch):
    """The hidden states predicting ``[SEG{s}_i]`` condition scale ``s``: with coarse-to-fine off
    (so scales do not feed each other), perturbing scale 0's predicting states changes the
    scale-0 masks and leaves the scale-1 masks identical, and the other way round."""
    batch = referring_batch
    model = geopix(referring_dm, decoder=MaskDecoderConfig(coarse_to_fine=False))
    _, category = _targets_by_hand(batch)
    predicting = _predicting_positions(model, batch, _num_visual(model, batch))
    per_scale = model.seg_config.per_scale
    base = _decoded(model, batch, category).per_scale
    for scale in range(len(model.feature_layers)):
        where = [
            p for target in predicting for p in target[scale * per_scale : (scale + 1) * per_scale]
        ]
        handle = _perturb_last_hidden(model, where)
        try:
            moved = _decoded(model, batch, category).per_scale
        finally:
            handle.remove()
        for other in range(len(model.feature_layers)):
            changed = _changed(moved[:, other], base[:, other])
            assert changed.all() if other == scale else not changed.any(), (scale, other)


def test_condition_is_the_projected_hidden_state_at_those_positions(referring_dm, referring_batch):
    """``cond[t, s, i]`` is ``seg_projector`` of ``hidden_states[-1]`` at the position predicting the
    ``(s, i)``-th token of target ``t``'s phrase (positions found here from the token ids)."""
    batch = referring_batch
    model = geopix(referring_dm)
    predicting = _predicting_positions(model, batch, _num_visual(model, batch))
    with torch.no_grad():
        out, cond, _, _ = model.conditions(batch, batch["input_ids"], batch["attention_mask"], None)
        last = out.hidden_states[-1]
        want = torch.stack(
            [
                torch.stack([model.seg_projector(last[r, c].float()) for r, c in target])
                for target in predicting
            ]
        ).view_as(cond)
    torch.testing.assert_close(cond, want)
