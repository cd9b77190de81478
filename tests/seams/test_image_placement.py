"""Where the visual tokens enter the LLM's sequence: at the ``<image>`` token (LLaVA's place) or
before the whole prompt (``image_placement: first``, the FUSE authors' ``vhm_arch.py``).

The splice is checked against a plain per-sample loop written here, with left and right
padding; FUSE's switch is checked on the sequence its LLM really receives.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from zoo.models import FUSE
from zoo.models.generator import splice_visual_tokens

IMAGE = 7


def _loop(
    embeds: Tensor, ids: Tensor, mask: Tensor, labels: Tensor, visual: Tensor, first: bool
) -> tuple[Tensor, Tensor, Tensor, list[int]]:
    """One sample at a time: drop the ``<image>`` token and put the visual tokens where it was,
    or before the first attended token."""
    rows, masks, labs, starts = [], [], [], []
    for e, i, m, lab, v in zip(embeds, ids, mask, labels, visual, strict=True):
        at = int((i == IMAGE).nonzero()[0])
        keep = [k for k in range(len(i)) if k != at]
        start = int(m.nonzero()[0]) if first else at
        text_e, text_m, text_l = e[keep], m[keep], lab[keep]
        n = len(v)
        rows.append(torch.cat([text_e[:start], v, text_e[start:]]))
        masks.append(torch.cat([text_m[:start], torch.ones(n, dtype=m.dtype), text_m[start:]]))
        labs.append(torch.cat([text_l[:start], torch.full((n,), -100), text_l[start:]]))
        starts.append(start)
    return torch.stack(rows), torch.stack(masks), torch.stack(labs), starts


@pytest.mark.parametrize("first", [False, True], ids=["token", "first"])
@pytest.mark.parametrize("padding", ["left", "right"])
def test_splice_matches_a_plain_loop(first: bool, padding: str):
    torch.manual_seed(0)
    b, t, n, d = 3, 9, 4, 5
    ids = torch.randint(10, 50, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    lengths = [9, 6, 7]
    image_at = [0, 2, 4]  # among each sample's real tokens
    for row, (length, at) in enumerate(zip(lengths, image_at, strict=True)):
        offset = t - length if padding == "left" else 0
        pad = slice(0, offset) if padding == "left" else slice(length, t)
        mask[row, pad] = 0
        ids[row, pad] = 0
        ids[row, offset + at] = IMAGE
    labels = torch.where(mask.bool(), ids, -100)
    embeds = torch.randn(b, t, d)
    visual = torch.randn(b, n, d)
    out, new_mask, new_labels, positions = splice_visual_tokens(
        embeds, ids, mask, labels, IMAGE, visual, image_first=first
    )
    want, want_mask, want_labels, starts = _loop(embeds, ids, mask, labels, visual, first)
    torch.testing.assert_close(out, want)
    assert torch.equal(new_mask, want_mask) and torch.equal(new_labels, want_labels)
    assert positions.tolist() == [list(range(s, s + n)) for s in starts]
    if first:  # nothing of the text comes before the image but padding
        assert all(int(new_mask[r, :s].sum()) == 0 for r, s in enumerate(starts))


def test_fuse_image_first_puts_the_visual_tokens_before_bos(conversation_dm, conversation_batch):
    """``image_placement: first``: the LLM's input starts with FUSE's projected visual tokens
    and the prompt's first token follows them; ``token`` keeps the text before ``<image>``
    first."""
    batch = conversation_batch
    ids, mask = batch["input_ids"], batch["attention_mask"]
    torch.manual_seed(0)
    token = FUSE(tokenizer=conversation_dm.tokenizer, class_names=conversation_dm.class_names)
    first = FUSE(
        tokenizer=conversation_dm.tokenizer,
        class_names=conversation_dm.class_names,
        image_placement="first",
    )
    first.load_state_dict(token.state_dict())
    assert first.hparams.image_placement == "first" and first.image_first and not token.image_first
    image_at = int((ids[0] == token.image_token_id).nonzero()[0])
    assert image_at > 0  # the word format writes "user :" before the image
    with torch.no_grad():
        visual, _ = first.visual_tokens(batch["image"])
        words = first.llm.get_input_embeddings()(ids)
        n = visual.shape[1]
        got_first, _, _ = first._inputs(batch["image"], ids, mask, None)
        got_token, _, _ = token._inputs(batch["image"], ids, mask, None)
    start = int(mask[0].nonzero()[0])
    torch.testing.assert_close(got_first[0, start : start + n], visual[0])
    torch.testing.assert_close(got_first[0, start + n], words[0, start])
    torch.testing.assert_close(got_token[0, image_at : image_at + n], visual[0])
    torch.testing.assert_close(got_token[0, :image_at], words[0, :image_at])
    assert first.injection_hooks.context["positions"][0, 0] == start


def test_an_unknown_image_placement_is_an_error(conversation_dm):
    with pytest.raises(ValueError, match="image_placement 'firts'"):
        FUSE(
            tokenizer=conversation_dm.tokenizer,
            class_names=conversation_dm.class_names,
            image_placement="firts",
        )
