"""GeoPix predict: each mask's category is the class its own phrase of the answer names, never
the question's (issue 21: "phrase: the road, category: tree")."""

from __future__ import annotations

import json

import pytest

from tests.models.conftest import prepared
from tests.models.test_geopix import geopix
from zoo.callbacks.masks import MaskPredictionWriter
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.datamodules import EmbeddedSplits


@pytest.fixture(scope="module")
def dm(tmp_path_factory) -> EmbeddedReferringDataModule:  # the conftest's batch follows it
    root = str(tmp_path_factory.mktemp("refs"))
    return prepared(
        EmbeddedReferringDataModule(root, splits=EmbeddedSplits(24, 8, 8), batch_size=4)
    )


def test_each_features_category_comes_from_its_phrase_in_the_answer(dm, batch, tmp_path):
    model = geopix(dm)
    questions = [q.lower() for q in batch["question"]]
    # The answer names classes the questions do not ask for, and one phrase names no class.
    assert not any("ship" in q or "field" in q for q in questions)
    assert all(any(name in q for name in dm.class_names) for q in questions)
    phrase = " ".join(f"[SEG{s}_{i}]" for s in range(2) for i in range(3))
    answer = dm.tokenizer(
        f"sure , the ship is {phrase} , the field is {phrase} , the largest object is {phrase} .",
        add_special_tokens=False,
        return_tensors="pt",
    )["input_ids"][0]
    model.llm.generate = lambda **_: answer.repeat(len(batch["image"]), 1)
    geo = [{"lat": 45.0, "lon": 7.0, "gsd_m": 1.0}] * len(batch["image"])
    rows = model.predict_step({**batch, "geo": geo}, 0)
    for row in rows:
        assert row["phrases"] == ["the ship", "the field", "the largest object"]
        assert row["category"] == ["ship", "field", None]
    MaskPredictionWriter(str(tmp_path / "out")).write_on_batch_end(
        None, None, rows, None, None, 0, 0
    )
    for row in rows:
        folder = tmp_path / "out" / row["id"]
        features = json.loads((folder / "masks.geojson").read_text())["features"]
        assert [f["properties"]["category"] for f in features] == ["ship", "field", None]
        assert json.loads((folder / "answer.json").read_text())["category"] == [
            "ship",
            "field",
            None,
        ]
