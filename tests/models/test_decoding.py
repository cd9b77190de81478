"""Decoding of every generator family: beams and return sequences get their own sample's
visual features inside the LLM, and cached greedy, sampling and beam decoding equal a no-cache
recompute of the whole model (tests/models/decoding.py) token for token."""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import make_aquila, prepared
from tests.models.decoding import decoded, reference_decode
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.models import FUSE, FuseInjection, GenerationConfig, GeoPix, MemoryConfig, SFIConfig
from zoo.models.decoding import repeat_rows


def _open_injection(model) -> None:
    """Give the zero-initialized parts of the injection modules (FUSE's alpha, gates) values,
    so the injection changes the logits and a wrong row would show."""
    modules = getattr(model, "mda", None) or getattr(model, "injection", None)
    torch.manual_seed(1)
    for p in modules.parameters():
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.5)


def _aquila(dm):
    model = make_aquila(dm, sfi=SFIConfig(mda_layers=[0, 2]))
    _open_injection(model)
    return model


def _fuse(dm):
    torch.manual_seed(0)
    model = FUSE(
        tokenizer=dm.tokenizer, class_names=dm.class_names, inject=FuseInjection(layers=[1, 2])
    ).eval()
    _open_injection(model)
    return model


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> EmbeddedReferringDataModule:
    root = str(tmp_path_factory.mktemp("refs"))
    return prepared(EmbeddedReferringDataModule(root, splits=EmbeddedSplits(8, 4, 4), batch_size=2))


def _geopix(dm):
    torch.manual_seed(0)
    return GeoPix(
        tokenizer=dm.tokenizer, class_names=dm.class_names, memory=MemoryConfig(capacity=4)
    ).eval()


def test_repeat_rows_walks_the_context():
    a, b = torch.arange(6).view(3, 2), torch.arange(3)
    out = repeat_rows({"maps": [a, (b,)], "none": None}, 2)
    assert out["maps"][0].tolist() == [[0, 1], [0, 1], [2, 3], [2, 3], [4, 5], [4, 5]]
    assert out["maps"][1][0].tolist() == [0, 0, 1, 1, 2, 2] and out["none"] is None
    with pytest.raises(TypeError, match="per beam"):
        repeat_rows(object(), 2)


@pytest.mark.parametrize("family", ["aquila", "fuse"])
def test_every_beam_row_gets_its_own_samples_features(dm, batch, family):
    model = _aquila(dm) if family == "aquila" else _fuse(dm)
    image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
    beams = 3
    with torch.no_grad():
        per_sample = model(image, ids, mask).logits
        # What generate does: the prompt rows expanded per beam, the context left at B rows.
        embeds, full_mask, _ = model._inputs(image, ids, mask, None)
        try:
            expanded = model.teacher_forced(
                embeds.repeat_interleave(beams, 0), full_mask.repeat_interleave(beams, 0), None
            ).logits
        finally:
            model.injection_hooks.stop()
        model.inject_layers, hooks = [], model.injection_hooks.handles
        model.install_injection_hooks()
        plain = model(image, ids, mask).logits
    torch.testing.assert_close(expanded, per_sample.repeat_interleave(beams, 0), atol=1e-5, rtol=0)
    assert (per_sample - plain).abs().max() > 1e-2  # the injection counts: a wrong row would show
    assert hooks


@pytest.mark.parametrize("family", ["aquila", "fuse"])
def test_generate_hands_each_beam_its_samples_context(dm, batch, family, monkeypatch):
    model = _aquila(dm) if family == "aquila" else _fuse(dm)
    model.generation = GenerationConfig(max_new_tokens=2, num_beams=3, num_return_sequences=2)
    seen = []
    inject = model.inject
    monkeypatch.setattr(model, "inject", lambda layer, v, c: seen.append(c) or inject(layer, v, c))
    _, context = model.visual_tokens(batch["image"])
    model.generate_ids(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"])
    assert len(seen) == len(model.inject_layers)  # the prefill only; decoding steps skip
    for got in seen:
        want = [context] if isinstance(context, torch.Tensor) else context
        got = [got] if isinstance(got, torch.Tensor) else got
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g, w.repeat_interleave(3, 0))


DECODINGS = {
    "beams": GenerationConfig(max_new_tokens=4, num_beams=3, num_return_sequences=2),
    "sampling": GenerationConfig(
        max_new_tokens=4,
        do_sample=True,
        temperature=0.7,
        top_k=40,
        top_p=0.9,
        num_return_sequences=2,
    ),
    "beam-sampling": GenerationConfig(
        max_new_tokens=3, do_sample=True, temperature=1.5, num_beams=2
    ),
}


@pytest.mark.parametrize("decoding", list(DECODINGS))
@pytest.mark.parametrize("family", ["aquila", "fuse", "geopix"])
def test_cached_decoding_equals_no_cache_reference(dm, batch, refs, family, decoding):
    if family == "geopix":
        model, data = (
            _geopix(refs),
            refs.on_after_batch_transfer(next(iter(refs.val_dataloader())), 0),
        )
    else:
        model, data = (_aquila(dm) if family == "aquila" else _fuse(dm)), batch
    model.generation = DECODINGS[decoding]
    args = (data["image"][:3], data["prompt_ids"][:3], data["prompt_attention_mask"][:3])
    torch.manual_seed(7)
    got = decoded(model, *args)
    torch.manual_seed(7)
    want = reference_decode(model, *args)
    assert got == want
    r = model.generation.num_return_sequences
    assert [len(a) for a in got] == [r] * len(args[0])
    if decoding == "sampling":  # the draws differ between a prompt's sequences
        assert any(a[0] != a[1] for a in got)


def test_geopix_predicts_through_the_shared_decoding(refs):
    model = _geopix(refs)
    model.generation = GenerationConfig(max_new_tokens=3, num_beams=2, num_return_sequences=2)
    data = refs.on_after_batch_transfer(next(iter(refs.val_dataloader())), 0)
    rows = model.predict_step(data, 0)
    best = model.generate(data["image"], data["prompt_ids"], data["prompt_attention_mask"])
    assert [r["answer"] for r in rows] == best


@pytest.mark.parametrize(("boost", "length_penalty"), [(1.5, 1.0), (1.5, 2.0)])
def test_beams_that_finish_early_equal_the_reference(dm, batch, boost, length_penalty):
    """EOS made likelier (a bias on its logit), so some beams finish early and the length
    penalty and the early-stopping rule decide between finished and running beams."""
    model = _aquila(dm)
    eos = dm.tokenizer.eos_token_id
    model.llm.lm_head.register_forward_hook(
        lambda module, inputs, out: out + boost * (torch.arange(out.shape[-1]) == eos)
    )
    model.generation = GenerationConfig(
        max_new_tokens=6, num_beams=3, num_return_sequences=2, length_penalty=length_penalty
    )
    args = (batch["image"][:3], batch["prompt_ids"][:3], batch["prompt_attention_mask"][:3])
    got = decoded(model, *args)
    assert got == reference_decode(model, *args)
    lengths = {len(s) for answers in got for s in answers}
    assert len(lengths) > 1 and 6 in lengths  # finished early and ran to the end, both
