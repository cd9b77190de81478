"""The location token of the generators (issue 26): where it enters the LLM, and what it loads.

Aquila, FUSE and GeoPix share it through the generator core
(:meth:`~zoo.models.generator.VisionLanguageGenerator.add_location_token`): one token after the
family's ``N`` visual tokens, spliced with them (labels -100, attended), the injections
(Aquila's MDA, FUSE's) still rewriting the ``N`` image tokens only.

Measured (docs/evaluation.md, "Location-aware generators"; bench/location_token.py): over three
seeds a new encoder is not read at this scale (hemisphere 0.780, the majority answer, with and
without it); from a FLAVARS checkpoint's encoder, frozen, hemisphere 0.950 and band 0.903
against 0.780 and 0.403 without the token (chance 1/2 and 1/4).
"""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import make_aquila, prepared
from zoo.data import EmbeddedConversationDataModule, EmbeddedDataModule
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.encoders.sources import architecture_only, collect_sources
from zoo.models import FLAVARS, FUSE, GeoPix, MemoryConfig
from zoo.models.location_token import LocationToken

SMALL = LocationToken(hidden=32, dim=32)


@pytest.fixture(scope="module")
def dm(tmp_path_factory) -> EmbeddedConversationDataModule:
    root = tmp_path_factory.mktemp("location")
    return prepared(
        EmbeddedConversationDataModule(
            str(root),
            splits=EmbeddedSplits(12, 6, 6),
            batch_size=4,
            tasks=["vqa", "location"],
        )
    )


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> EmbeddedReferringDataModule:
    root = tmp_path_factory.mktemp("location_refs")
    return prepared(EmbeddedReferringDataModule(str(root), splits=EmbeddedSplits(8, 4, 4)))


def _family(name: str, dm, refs, **kwargs):
    torch.manual_seed(0)
    if name == "aquila":
        return make_aquila(dm, **kwargs), dm
    if name == "fuse":
        return FUSE(tokenizer=dm.tokenizer, class_names=dm.class_names, **kwargs).eval(), dm
    model = GeoPix(
        tokenizer=refs.tokenizer,
        class_names=refs.class_names,
        memory=MemoryConfig(capacity=4),
        **kwargs,
    )
    return model.eval(), refs


def _batch(data) -> dict:
    batch = next(iter(data.train_dataloader()))
    return data.on_after_batch_transfer(batch, 0)


def _llm_inputs(model, batch: dict, location: torch.Tensor) -> torch.Tensor:
    """The embeddings the LLM receives in a teacher-forced pass (a hook on its forward)."""
    seen = []
    handle = model.llm.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["inputs_embeds"].detach().clone()),
        with_kwargs=True,
    )
    try:
        with torch.no_grad():
            if isinstance(model, GeoPix):
                model.conditions(
                    {**batch, "location": location},
                    batch["input_ids"],
                    batch["attention_mask"],
                    batch["labels"],
                )
            else:
                model(
                    batch["image"], batch["input_ids"], batch["attention_mask"], location=location
                )
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("family", ["aquila", "fuse", "geopix"])
def test_the_location_token_reaches_the_llm_input_after_the_visual_tokens(family, dm, refs):
    model, data = _family(family, dm, refs, location=SMALL)
    batch = _batch(data)
    location = batch["location"]
    with torch.no_grad():
        n = model.visual_tokens(batch["image"])[0].shape[1]
        token = model.location_token(location)[:, 0]
        *_, positions, _, count = model.spliced_inputs(
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"], location
        )
    assert count == n and positions.shape[1] == n + 1
    where = positions[:, -1]  # the location token's position: right after the image's tokens
    embeds = _llm_inputs(model, batch, location)
    rows = torch.arange(len(where))
    torch.testing.assert_close(embeds[rows, where], token, rtol=0, atol=0)

    # Another place for the first image: its token changes, nothing else of the LLM input does.
    moved = location.clone()
    moved[0] = torch.tensor([-location[0, 0].item() or 45.0, location[0, 1].item()])
    changed = (_llm_inputs(model, batch, moved) != embeds).any(-1)
    expected = torch.zeros_like(changed)
    expected[0, where[0]] = True
    assert torch.equal(changed, expected)


def test_the_token_is_attended_not_scored_and_the_injection_sees_only_the_image(dm, refs):
    model, data = _family("aquila", dm, refs, location=SMALL)
    batch = _batch(data)
    _, mask, labels, positions, _, count = model.spliced_inputs(
        batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"],
        batch["location"],
    )  # fmt: skip
    rows = torch.arange(len(positions))[:, None]
    assert (mask[rows, positions] == 1).all()
    assert (labels[rows, positions] == -100).all()
    started = []
    original = model.injection_hooks.start
    model.injection_hooks.start = lambda p, *a: (started.append(p), original(p, *a))[1]
    with torch.no_grad():
        model(
            batch["image"], batch["input_ids"], batch["attention_mask"], location=batch["location"]
        )
    assert torch.equal(started[0], positions[:, :count])  # MDA rewrites the image's tokens


def test_a_batch_without_location_is_a_clear_error(dm, refs):
    model, data = _family("aquila", dm, refs, location=SMALL)
    batch = _batch(data)
    with pytest.raises(ValueError, match="needs the batch's 'location'"):
        model.training_step({k: v for k, v in batch.items() if k != "location"}, 0)


def test_without_location_the_model_is_unchanged_and_ignores_the_batch_location(dm, refs):
    plain, data = _family("aquila", dm, refs)
    assert plain.location_token is None and plain.hparams["location"] is None
    assert not any("location" in k for k in plain.state_dict())
    batch = _batch(data)
    with torch.no_grad():
        a = plain(batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"])
        b = plain(
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"],
            location=batch["location"],
        )  # fmt: skip
    assert torch.equal(a.logits, b.logits)


@pytest.fixture(scope="module")
def flavars_checkpoint(tmp_path_factory):
    """A FLAVARS model's weights saved as its Lightning checkpoint holds them."""
    folder = tmp_path_factory.mktemp("flavars")
    torch.manual_seed(3)
    table = EmbeddedDataModule(str(folder / "data"))
    flavars = FLAVARS(image_size=64, embed_dim=32, tokenizer=table.tokenizer)
    path = folder / "flavars.ckpt"
    torch.save({"state_dict": flavars.state_dict()}, path)
    return flavars, path


def test_a_flavars_checkpoint_gives_its_location_encoder_frozen(dm, refs, flavars_checkpoint):
    flavars, path = flavars_checkpoint
    model, data = _family("aquila", dm, refs, location=LocationToken(checkpoint=str(path)))
    mine = model.location_token.encoder.state_dict()
    theirs = flavars.location_encoder.state_dict()
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():
        torch.testing.assert_close(mine[key], value, rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.location_token.encoder.parameters())
    assert all(p.requires_grad for p in model.location_token.projection.parameters())
    flavars.eval()
    where = _batch(data)["location"]
    with torch.no_grad():  # the same features as FLAVARS' own encoder
        torch.testing.assert_close(
            model.location_token.encoder(where.double()), flavars.location_encoder(where.double())
        )
    # Rebuilt without the file (zoo.load): the architecture from the stored sizes.
    sources = collect_sources(model)
    moved = path.rename(path.with_suffix(".gone"))
    try:
        with architecture_only(sources):
            again, _ = _family("aquila", dm, refs, location=LocationToken(checkpoint=str(path)))
    finally:
        moved.rename(path)
    assert again.state_dict().keys() == model.state_dict().keys()


def test_a_checkpoint_without_a_location_encoder_is_named(dm, refs, tmp_path):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"vision.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="no location-encoder weights.*'vision'"):
        _family("aquila", dm, refs, location=LocationToken(checkpoint=str(path)))
