"""Coordinates of conversation records: the batch's ``location`` (issue 26)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from zoo.data.conversations import ConversationCollate, ConversationDataset
from zoo.data.record_locations import batch_locations, record_locations
from zoo.data.tokenize import build_tokenizer


def _record(n: int, **where) -> dict:
    turns = [{"from": "human", "value": "<image>\nwhere?"}, {"from": "gpt", "value": "here"}]
    return {"id": f"r{n}", "image": "a.png", "conversations": turns, **where}


def test_lat_lon_and_location_fields_give_one_row_per_record() -> None:
    records = [_record(0, lat=-33.9, lon=151.2), _record(1, location=[48.85, 2.35])]
    location = record_locations(records, "f.json")
    assert location.dtype == torch.float32
    torch.testing.assert_close(location, torch.tensor([[-33.9, 151.2], [48.85, 2.35]]))
    assert record_locations([_record(0), _record(1)], "f.json") is None


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([_record(0, lat=1.0, lon=2.0), _record(1)], r"record 1 \(id 'r1'\): has no coordinates"),
        ([_record(0, lat=1.0)], "has lat but no lon"),
        ([_record(0, location=[1.0, 2.0], lat=1.0)], "both 'location' and 'lat'/'lon'"),
        ([_record(0, location=[1.0])], r"'location' must be a \[lat, lon\] pair"),
        ([_record(0, lat="north", lon=2.0)], "lat must be a number"),
        ([_record(0, lat=0.0, lon=0.0), _record(1, lat=95.0, lon=2.0)], "latitude 95.0 at row 1"),
    ],
)
def test_bad_coordinates_are_named(records, match) -> None:
    with pytest.raises(ValueError, match=match):
        record_locations(records, "f.json")


def test_the_conversation_batch_carries_the_records_locations(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    records = [_record(0, lat=10.0, lon=20.0), _record(1, lat=-5.0, lon=-60.0)]
    (tmp_path / "c.json").write_text(json.dumps(records))
    dataset = ConversationDataset(tmp_path, "c.json", image_size=8)
    tokenizer = build_tokenizer(None, ["where", "here"], chat=True)
    batch = ConversationCollate(tokenizer)([dataset[0], dataset[1]])
    torch.testing.assert_close(batch["location"], torch.tensor([[10.0, 20.0], [-5.0, -60.0]]))


def test_a_referring_batch_takes_the_images_geo_centres() -> None:
    samples = [
        {"id": "a", "geo": {"lat": 1.0, "lon": 2.0}},
        {"id": "b", "geo": {"lat": 3.0, "lon": 4.0}},
    ]
    torch.testing.assert_close(batch_locations(samples), torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    assert batch_locations([{"id": "a", "geo": None}]) is None
    with pytest.raises(ValueError, match="sample 'b' of the batch has no coordinates"):
        batch_locations([samples[0], {"id": "b", "geo": None}])


def test_the_embedded_conversations_pass_each_images_location(tmp_path: Path) -> None:
    from zoo.data import EmbeddedConversationDataModule
    from zoo.data.datamodules import EmbeddedSplits

    dm = EmbeddedConversationDataModule(
        str(tmp_path), splits=EmbeddedSplits(4, 2, 2), batch_size=8, tasks=["location"]
    )
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    table = pd.read_csv(dm.dataset_root / "val.csv")
    images = [i.rsplit("_location", 1)[0] for i in batch["id"]]
    want = [table.set_index(table["filepath"].str[-13:-4]).loc[n, ["lat", "lon"]] for n in images]
    torch.testing.assert_close(batch["location"], torch.tensor([list(w) for w in want]).float())
    assert set(batch["question_type"]) == {"hemisphere", "band"}
