"""FLAVARS' inference surface after ``model, transform, tokenizer = zoo.load(path)`` (issue 23):
``encode_image``, ``encode_text``, ``encode_location`` and ``zero_shot``, with no datamodule.

One tiny FLAVARS fit (module-scoped); the model loaded three ways (``zoo.load`` of the
checkpoint and of a ``save_pretrained`` folder, ``FLAVARS.load_from_checkpoint``) embeds alike,
the transform prepares a file exactly as the training data's pipeline does, and ``zero_shot``
predicts what validation's zero-shot accuracy counts.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.test_ckpt_path import _override
from zoo.main import build_from_configs, main
from zoo.metrics import zero_shot_logits
from zoo.models import FLAVARS

ROOT = Path(__file__).parents[2]
CONFIG = str(ROOT / "configs" / "flavars.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny fit without a logger; the model loaded the three ways, and the run's own
    datamodule (its validation split, images as files)."""
    folder = tmp_path_factory.mktemp("flavars_inference")
    # The tiny run of tests/test_ckpt_path.py, without a logger.
    override = _override(folder, folder / "runs", folder / "data", logger=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["zoo"])  # the CLI parses its args alone
        main(["fit", "--config", CONFIG, "--config", str(override)])
    (checkpoint,) = (folder / "runs").glob("**/last.ckpt")
    loaded, transform, tokenizer = zoo.load(checkpoint, device="cpu")
    exported = loaded.save_pretrained(folder / "export")
    datamodule = build_from_configs([CONFIG, override]).datamodule
    datamodule.prepare_data()
    datamodule.setup("validate")
    dataset = datamodule.val_dataset
    return types.SimpleNamespace(
        checkpoint=checkpoint,
        models={
            "zoo.load(ckpt)": loaded,
            "zoo.load(folder)": zoo.load(exported, device="cpu")[0],
            "load_from_checkpoint": FLAVARS.load_from_checkpoint(checkpoint),
        },
        transform=transform,
        tokenizer=tokenizer,
        datamodule=datamodule,
        files=[dataset.root / f for f in dataset.table["filepath"]],
        captions=[str(c) for c in dataset.table["caption"]],
        locations=[(float(a), float(b)) for a, b in dataset.table[["lat", "lon"]].to_numpy()],
    )


def _images(run) -> torch.Tensor:
    """The validation files through the loaded transform, as a user would prepare them."""
    return torch.stack([run.transform(Image.open(path)) for path in run.files])


def _unit(embedding: torch.Tensor) -> None:
    torch.testing.assert_close(embedding.norm(dim=-1), torch.ones(len(embedding)))


def test_the_transform_is_the_training_pipeline(run):
    """A PIL image of a data file through ``transform`` is, to the bit, what the datamodule makes
    of that file: dataset item -> collate -> ``on_after_batch_transfer``."""
    dm = run.datamodule
    for index, path in enumerate(run.files):
        batch = dm.on_after_batch_transfer(dm.collate_fn([dm.val_dataset[index]]), 0)
        mine = run.transform(Image.open(path))
        assert mine.dtype == batch["image"].dtype and mine.shape == batch["image"].shape[1:]
        assert torch.equal(mine, batch["image"][0]), path


def test_the_three_loads_embed_alike(run):
    """Equal (and unit) image, text and location embeddings from the checkpoint, the exported
    folder and ``load_from_checkpoint``, for inputs prepared on the CPU."""
    images = _images(run)
    out = {
        name: (
            model.encode_image(images),
            model.encode_text(run.captions),
            model.encode_location(run.locations),
        )
        for name, model in run.models.items()
    }
    (first, *others) = out.values()
    for embedding in first:
        assert embedding.shape == (len(run.files), first[0].shape[1])
        _unit(embedding)
    for other in others:
        for mine, theirs in zip(first, other, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_the_input_forms_agree(run):
    """Texts as strings, as ids + mask, as ``**tokens``; locations as pairs and as a tensor; a
    model cast to float64 takes the float32 images as they come."""
    model = run.models["zoo.load(ckpt)"]
    tokens = model.tokenize(run.captions)
    by_text = model.encode_text(run.captions)
    torch.testing.assert_close(by_text, model.encode_text(**tokens), rtol=0, atol=0)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    torch.testing.assert_close(by_text, model.encode_text(ids, mask), rtol=0, atol=0)
    torch.testing.assert_close(model.encode_text(run.captions[0]), by_text[:1])
    where = torch.tensor(run.locations)
    torch.testing.assert_close(model.encode_location(run.locations), model.encode_location(where))
    double = zoo.load(run.checkpoint, device="cpu", dtype=torch.float64)[0]
    images = _images(run)
    torch.testing.assert_close(
        double.encode_image(images).float(), model.encode_image(images), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(TypeError, match="transform"):
        model.encode_image((images * 0).byte())
    with pytest.raises(ValueError, match="B×C×H×W"):
        model.encode_image(images[0])
    with pytest.raises(TypeError, match="list of strings"):
        model.encode_text([])


def test_zero_shot_predicts_what_validation_counts(run):
    """``zero_shot``'s argmax is validation's zero-shot prediction (the batch's embeddings
    against the class embeddings, as ``_eval_step`` computes them); the probabilities sum to
    one per image; other class names are honoured."""
    model = run.models["zoo.load(ckpt)"]
    dm = run.datamodule
    batch = dm.on_after_batch_transfer(dm.collate_fn([dm.val_dataset[i] for i in range(8)]), 0)
    with torch.no_grad():
        image_emb = model.image_features_and_embedding(batch["image"])[1]
        logits = zero_shot_logits(image_emb, model.zero_shot_class_embeddings())
    probs = model.zero_shot(_images(run))
    assert probs.shape == (len(run.files), len(model.class_names))
    torch.testing.assert_close(probs.sum(-1), torch.ones(len(probs)))
    assert torch.equal(probs.argmax(-1), logits.argmax(-1))
    expected = (logits * model.logit_scale.exp()).softmax(-1)
    torch.testing.assert_close(probs, expected)  # the demo's classify computes it so
    some = model.class_names[:3]
    sub = model.zero_shot(_images(run), class_names=some)
    assert sub.shape == (len(run.files), 3)
    assert torch.equal(sub.argmax(-1), logits[:, :3].argmax(-1))


def test_zero_shot_without_class_names_says_so(run, monkeypatch):
    model = run.models["zoo.load(ckpt)"]
    monkeypatch.setattr(model, "class_names", [])
    with pytest.raises(ValueError, match="no class names.*class_names="):
        model.zero_shot(_images(run)[:1])
    assert model.zero_shot(_images(run)[:1], class_names=["lake", "forest"]).shape == (1, 2)


def test_bad_inputs_get_clear_errors(run):
    """A 4-band array and an H×W×C array (ImageTransform's errors); a latitude of 200."""
    with pytest.raises(ValueError, match="4 bands but the model reads 3"):
        run.transform(np.zeros((4, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="H×W×C array\\? transpose it"):
        run.transform(np.zeros((32, 32, 3), dtype=np.uint8))
    model = run.models["zoo.load(ckpt)"]
    with pytest.raises(ValueError, match=r"latitude 200\.0 .*outside the valid range \[-90, 90\]"):
        model.encode_location([(10.0, 20.0), (200.0, 5.0)])
