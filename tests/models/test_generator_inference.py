"""The generators' inference surface (issue 23): ``answer(images, questions)`` and GeoPix's
``segment(image, question)``, on the models of a tiny fit of configs/aquila.yaml,
configs/fuse.yaml and configs/geopix.yaml.

Checked: ``zoo.load(ckpt)``, ``zoo.load(export folder)`` and ``Family.load_from_checkpoint(ckpt)``
answer (and segment) alike; ``answer`` equals ``predict_step`` through the datamodule's collate;
a batch of two equals two batches of one (left padding); the stop token ends an answer;
``max_new_tokens`` is honoured. Where the decoding must follow a given path (the stop token, the
length, GeoPix's segmentation phrases), a hook on ``lm_head`` favours chosen tokens at chosen
steps: everything else (the prompts, the splice, ``generate`` with the KV cache, decoding and the
masks) runs as it does.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.test_old_checkpoints import _configs, _override
from zoo.conversation_formats import SHORT_ANSWER_PROMPT
from zoo.main import main
from zoo.models import FUSE, Aquila, GeoPix

FAMILIES = {"aquila": Aquila, "fuse": FUSE, "geopix": GeoPix}
#: Aquila is the quick one; FUSE's and GeoPix's fits are slower.
PARAMS = [
    pytest.param("aquila"),
    pytest.param("fuse", marks=pytest.mark.slow),
    pytest.param("geopix", marks=pytest.mark.slow),
]


@pytest.fixture(autouse=True)
def _argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["zoo"])


def _fit(family: str, folder: Path) -> types.SimpleNamespace:
    """A two-step fit; its last checkpoint, the models loaded three ways, a validation batch."""
    cwd = os.getcwd()
    os.chdir(folder)  # the config's prediction writers write under runs/ here
    try:
        override = _override(folder, folder / "data", family)  # two steps, 16 images
        cli = main(
            [
                "fit",
                *_configs(family, override),
                "--model.init_args.val_generate_batches=0",
                "--model.init_args.generation.max_new_tokens=8",
            ]
        )
    finally:
        os.chdir(cwd)
    (ckpt,) = sorted((folder / "runs").rglob("last.ckpt"))
    loaded, _, _ = zoo.load(ckpt, device="cpu")
    exported = loaded.save_pretrained(folder / "export")
    dm = cli.datamodule
    raw = next(iter(dm.val_dataloader()))
    return types.SimpleNamespace(
        family=family,
        ckpt=ckpt,
        models={
            "zoo.load(ckpt)": loaded,
            "zoo.load(folder)": zoo.load(exported, device="cpu")[0],
            "load_from_checkpoint": FAMILIES[family].load_from_checkpoint(ckpt).eval(),
        },
        dm=dm,
        raw=raw,
        batch=dm.on_after_batch_transfer({k: v for k, v in raw.items()}, 0),
    )


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    cache: dict[str, types.SimpleNamespace] = {}

    def get(family: str) -> types.SimpleNamespace:
        if family not in cache:
            cache[family] = _fit(family, tmp_path_factory.mktemp(family))
        return cache[family]

    return get


def _questions(run: types.SimpleNamespace) -> list[str]:
    """The batch's questions as the collate asked them (the short-answer instruction added to
    the tasks it adds it to)."""
    short = getattr(run.dm, "short_answer_tasks", ("vqa",))  # the referring data: vqa
    return [
        f"{q}\n{SHORT_ANSWER_PROMPT}" if task in short else q
        for q, task in zip(run.batch["question"], run.raw["task"], strict=True)
    ]


def _raw_images(run: types.SimpleNamespace) -> list[np.ndarray]:
    """The batch's images before normalization (``C×H×W``, [0, 255]), as a user has them."""
    return [image.numpy() for image in run.raw["image"]]


@contextmanager
def favour(model, steps: Sequence[int | None], then: int | None = None) -> Iterator[None]:
    """The LLM's ``lm_head`` favours ``steps[k]`` at its ``k``-th call (the prompt's pass, then
    one per generated token) and ``then`` afterwards; None leaves a step as the model has it."""
    calls = [0]

    def hook(module, args, output):
        k = calls[0]
        calls[0] += 1
        token = steps[k] if k < len(steps) else then
        if token is not None:
            output = output.clone()
            output[:, -1, token] += 1e4
        return output

    handle = model.llm.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def next_token_logits(model, seen: list[torch.Tensor]) -> Iterator[None]:
    """Keep the logits of each prompt's first generated token (``lm_head``'s first call)."""
    calls = [0]

    def hook(module, args, output):
        if calls[0] == 0:
            seen.append(output[:, -1].detach().clone())
        calls[0] += 1

    handle = model.llm.get_output_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _word(model) -> int:
    """A plain word of the vocabulary (not a special token)."""
    word = model.tokenizer.convert_tokens_to_ids("ship")
    assert word != model.tokenizer.unk_token_id
    return int(word)


@pytest.mark.parametrize("family", PARAMS)
def test_answer_equals_predict_step_through_the_collate(fits, family):
    run = fits(family)
    model = run.models["zoo.load(ckpt)"]
    rows = model.predict_step(run.batch, 0)
    questions = _questions(run)
    expected = [row["answer"] for row in rows]
    assert model.answer(run.batch["image"], questions) == expected
    # Raw images prepared by the model's own transform: the datamodule's normalization.
    prepared = model.prepare_images(_raw_images(run))
    torch.testing.assert_close(prepared, run.batch["image"])
    assert model.answer(_raw_images(run), questions) == expected
    prompts, mask = model.prompt_batch(questions)
    assert torch.equal(prompts, run.batch["prompt_ids"])
    assert torch.equal(mask, run.batch["prompt_attention_mask"])


@pytest.mark.parametrize("family", PARAMS)
def test_every_way_of_loading_answers_alike(fits, family):
    run = fits(family)
    images, questions = _raw_images(run), _questions(run)
    answers = {name: m.answer(images, questions) for name, m in run.models.items()}
    first = next(iter(answers.values()))
    assert all(a == first for a in answers.values()), answers
    assert len(first) == len(images)


@pytest.mark.parametrize("family", PARAMS)
def test_a_batch_equals_batches_of_one(fits, family):
    run = fits(family)
    model = run.models["zoo.load(ckpt)"]
    images, questions = _raw_images(run), _questions(run)
    lengths = model.prompt_batch(questions)[1].sum(1)
    assert len(set(lengths.tolist())) > 1  # prompts of different lengths: some are padded
    logits, logits_alone = [], []
    with next_token_logits(model, logits):
        together = model.answer(images, questions, max_new_tokens=6)
    alone = []
    for im, q in zip(images, questions, strict=True):
        with next_token_logits(model, logits_alone):
            alone += model.answer([im], [q], max_new_tokens=6)
    assert together == alone
    # The answers of a short run hardly depend on the prompt: the next token's scores do.
    torch.testing.assert_close(logits[0], torch.cat(logits_alone), atol=1e-4, rtol=1e-4)
    # One question for every image.
    assert model.answer(images[:2], questions[0], max_new_tokens=6) == [
        model.answer([im], questions[0], max_new_tokens=6)[0] for im in images[:2]
    ]


@pytest.mark.parametrize("family", PARAMS)
def test_the_stop_token_ends_the_answer(fits, family):
    run = fits(family)
    model = run.models["zoo.load(ckpt)"]
    word, stop = _word(model), model.stop_token_ids[0]
    with favour(model, [word, word, stop], then=word):  # "ship ship <stop> ship ship ..."
        (answer,) = model.answer(_raw_images(run)[:1], "Describe the image briefly.", 12)
    assert answer == "ship ship"


@pytest.mark.parametrize("family", PARAMS)
def test_max_new_tokens_is_honoured_for_one_call(fits, family):
    run = fits(family)
    model = run.models["zoo.load(ckpt)"]
    image, word = _raw_images(run)[:1], _word(model)
    with favour(model, [], then=word):
        assert model.answer(image, "Describe the image briefly.", max_new_tokens=3) == [
            "ship ship ship"
        ]
    assert model.generation.max_new_tokens == 8  # the model's own setting is unchanged
    with favour(model, [], then=word):
        (default,) = model.answer(image, "Describe the image briefly.")
    assert default.split() == ["ship"] * 8


@pytest.mark.parametrize("family", PARAMS[:1])
def test_bad_inputs_are_named(fits, family):
    model = fits(family).models["zoo.load(ckpt)"]
    image = np.zeros((3, 64, 64), dtype=np.uint8)
    with pytest.raises(ValueError, match="one per image"):
        model.answer([image, image], ["a", "b", "c"])
    with pytest.raises(TypeError, match="wrap one raw image in a list"):
        model.answer(image, "a")
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.answer([image], "a", max_new_tokens=0)


# ------------------------------------------------------------------------------ GeoPix
def _segmentation_answer(model) -> list[int]:
    """The ids of "ship <one phrase> [EOS]" in the model's tokenizer (8 tokens: the fit's
    ``max_new_tokens``)."""
    from zoo.data.referring import seg_phrase

    tokenizer = model.tokenizer
    text = f"ship {seg_phrase(len(model.feature_layers), model.seg_config.per_scale)}"
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], model.stop_token_ids[0]]


@pytest.mark.slow
def test_segment_equals_predict_step_and_every_way_of_loading(fits):
    run = fits("geopix")
    image = run.raw["image"][0]  # a C×H×W tensor in [0, 255]: a raw image
    question = _questions(run)[0]
    batch = {k: v[:1] for k, v in run.batch.items() if isinstance(v, (torch.Tensor, list))}
    answer = _segmentation_answer(run.models["zoo.load(ckpt)"])
    results = {}
    for name, model in run.models.items():
        with favour(model, answer):
            results[name] = model.segment(image, question)
    first = results["zoo.load(ckpt)"]
    assert first.answer == "ship" and first.phrases == ["ship"]
    assert first.categories == ["ship"] and first.masks.dtype == torch.bool
    assert first.masks.shape == (1, *image.shape[-2:]) == first.logits.shape
    for name, result in results.items():
        assert result.answer == first.answer and result.phrases == first.phrases, name
        assert torch.equal(result.masks, first.masks), name
    model = run.models["zoo.load(ckpt)"]
    with favour(model, answer):
        (row,) = model.predict_step(batch, 0)
    assert row["answer"] == first.answer and row["phrases"] == first.phrases
    assert row["category"] == first.categories
    torch.testing.assert_close(first.logits > 0, row["masks"])  # the input's own size: 64 px


@pytest.mark.slow
def test_segment_resizes_the_masks_to_the_given_image(fits, tmp_path):
    model = fits("geopix").models["zoo.load(ckpt)"]
    answer = _segmentation_answer(model)
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 96, 3), np.uint8))
    with favour(model, answer):
        result = model.segment(picture, "Please segment the ship.")
    assert result.masks.shape == (1, 80, 96)
    with favour(model, answer):
        small = model.segment(model.transform(picture)[None], "Please segment the ship.")
    assert small.masks.shape == (1, 64, 64)  # a normalized batch of one: the model's input size
    resized = torch.nn.functional.interpolate(
        small.logits[:, None], size=(80, 96), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(result.logits, resized)
    # Trained with pad_to_square: back through the padded 96 px square, its padding cropped.
    square = dataclasses.replace(model.preprocessing, pad_to_square=True)
    model.preprocessing, kept = square, model.preprocessing
    try:
        with favour(model, answer):
            padded = model.segment(picture, "Please segment the ship.")
        with favour(model, answer):
            small = model.segment(model.transform(picture)[None], "Please segment the ship.")
    finally:
        model.preprocessing = kept
    resized = torch.nn.functional.interpolate(
        small.logits[:, None], size=(96, 96), mode="bilinear", align_corners=False
    )[:, 0]
    torch.testing.assert_close(padded.logits, resized[:, 8:88])
    with favour(model, [model.stop_token_ids[0]]):  # no phrase: no mask, at the image's size
        empty = model.segment(picture, "Please segment the ship.")
    assert empty.masks.shape == (0, 80, 96) and empty.phrases == []
