"""Geographic splits (issue 26): blocks, continents and latitude bands from coordinates alone,
and the datamodules' ``geo_split``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import write_table_dataset
from zoo.data.datamodules import (
    ConversationDataModule,
    EmbeddedConversationDataModule,
    EmbeddedDataModule,
    ImageTextLocationDataModule,
)
from zoo.data.geo_splits import GEO_SPLITS, GeoSplit, assign, block_ids, continent_of

TRAIN, VAL, HELD_OUT, IN_REGION = (GEO_SPLITS.index(s) for s in GEO_SPLITS)

# (lat, lon, continent): looked up by hand on a map
PLACES = {
    "Nairobi": (-1.3, 36.8, "africa"),
    "Cairo": (30.0, 31.2, "africa"),
    "Tunis": (36.8, 10.2, "africa"),
    "Cape Town": (-33.9, 18.4, "africa"),
    "Paris": (48.9, 2.35, "europe"),
    "Seville": (37.4, -6.0, "europe"),
    "Reykjavik": (64.1, -21.9, "europe"),
    "Moscow": (55.75, 37.6, "europe"),
    "Tokyo": (35.7, 139.7, "asia"),
    "Riyadh": (24.7, 46.7, "asia"),
    "Tel Aviv": (32.1, 34.8, "asia"),
    "Jakarta": (-6.2, 106.8, "asia"),
    "Yekaterinburg": (56.8, 60.6, "asia"),
    "New York": (40.7, -74.0, "north_america"),
    "Panama": (9.0, -79.5, "north_america"),
    "Havana": (23.1, -82.4, "north_america"),
    "Nuuk": (64.2, -51.7, "north_america"),
    "Bogota": (4.7, -74.1, "south_america"),
    "Caracas": (10.5, -66.9, "south_america"),
    "Sao Paulo": (-23.5, -46.6, "south_america"),
    "Sydney": (-33.9, 151.2, "oceania"),
    "Port Moresby": (-9.4, 147.2, "oceania"),
    "Honolulu": (21.3, -157.9, "oceania"),
    "McMurdo": (-77.8, 166.7, "antarctica"),
}


def _places() -> tuple[np.ndarray, np.ndarray, list[str]]:
    lat, lon, continent = zip(*PLACES.values(), strict=True)
    return np.array(lat), np.array(lon), list(continent)


def test_continents_of_hand_placed_cities():
    lat, lon, expected = _places()
    assert continent_of(lat, lon).tolist() == expected


def test_block_ids_by_hand():
    # 10-degree cells, 36 columns: row = (lat + 90) // 10, col = (lon + 180) // 10; the poles
    # and the antimeridian fall in the last row and column
    ids = block_ids([0.0, 5.0, -5.0, 89.9, 90.0], [0.0, 5.0, 0.0, 179.0, 180.0], 10.0)
    assert ids.tolist() == [9 * 36 + 18, 9 * 36 + 18, 8 * 36 + 18, 17 * 36 + 35, 17 * 36 + 35]


def test_continents_hold_out_the_named_ones():
    lat, lon, continent = _places()
    split = GeoSplit("continents", held_out=["Africa", "south america"], in_region_fraction=0.0)
    codes = assign(lat, lon, split)
    held = np.isin(continent, ["africa", "south_america"])
    assert (codes[held] == HELD_OUT).all()
    assert np.isin(codes[~held], [TRAIN, VAL]).all()


def test_latitude_bands_by_hand():
    lat = np.array([0.0, 10.0, 29.9, 30.0, -45.0, 90.0, -29.0])
    lon = np.zeros_like(lat)
    split = GeoSplit("latitude_bands", bands=[(30.0, 90.0)], val_fraction=0.0, in_region_fraction=0)
    codes = assign(lat, lon, split)
    assert codes.tolist() == [TRAIN, TRAIN, TRAIN, HELD_OUT, HELD_OUT, HELD_OUT, TRAIN]
    signed = GeoSplit(
        "latitude_bands",
        bands=[(-90.0, 0.0)],
        absolute_latitude=False,
        val_fraction=0.0,
        in_region_fraction=0,
    )
    assert (assign(lat, lon, signed) == HELD_OUT).tolist() == [False] * 4 + [True, False, True]


def _random_points(n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)


def test_blocks_never_straddle_splits_and_meet_the_fractions():
    lat, lon = _random_points()
    split = GeoSplit("blocks", size_deg=10.0, fractions=(0.6, 0.1, 0.3), in_region_fraction=0.2)
    codes = assign(lat, lon, split)
    region = np.where(codes == IN_REGION, TRAIN, codes)  # in-region samples: training cells
    blocks = block_ids(lat, lon, 10.0)
    for cell in np.unique(blocks):
        assert len(np.unique(region[blocks == cell])) == 1, f"cell {cell} straddles splits"
    shares = np.bincount(region, minlength=4)[[TRAIN, VAL, HELD_OUT]] / len(lat)
    np.testing.assert_allclose(shares, [0.6, 0.1, 0.3], atol=0.05)
    in_region = (codes == IN_REGION).sum() / (region == TRAIN).sum()
    assert 0.15 < in_region < 0.25


def test_the_seed_decides():
    lat, lon = _random_points()
    first = assign(lat, lon, GeoSplit("blocks", seed=3))
    np.testing.assert_array_equal(first, assign(lat, lon, GeoSplit("blocks", seed=3)))
    assert (first != assign(lat, lon, GeoSplit("blocks", seed=4))).any()


@pytest.mark.parametrize(
    "split",
    [
        GeoSplit("blocks", fractions=(0.5, 0.2, 0.3), in_region_fraction=0.3),
        GeoSplit("continents", held_out=["europe"], val_fraction=0.3, in_region_fraction=0.3),
    ],
    ids=["blocks", "continents"],
)
def test_a_samples_split_depends_on_its_coordinates_alone(split):
    # a config with fewer images (a generator's 400 of the 2000) splits the shared ones alike
    lat, lon = _random_points()
    whole = assign(lat, lon, split)
    order = np.random.default_rng(2).permutation(len(lat))[:500]
    np.testing.assert_array_equal(assign(lat[order], lon[order], split), whole[order])
    assert len(np.unique(whole)) == 4


def test_bad_coordinates_name_the_sample():
    with pytest.raises(ValueError, match=r"latitude 200\.0 of images/b\.png"):
        assign([10.0, 200.0], [0.0, 0.0], GeoSplit("blocks"), ["images/a.png", "images/b.png"])
    with pytest.raises(ValueError, match="longitude nan of sample 0"):
        assign([10.0], [float("nan")], GeoSplit("blocks"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "continents"}, "name the test continents"),
        ({"kind": "continents", "held_out": ["atlantis"]}, "unknown continent"),
        ({"kind": "latitude_bands", "bands": [(40.0, 30.0)]}, "low < high"),
        ({"kind": "blocks", "fractions": (0.5, 0.5, 0.5)}, "sum to 1"),
        ({"kind": "blocks", "held_out": ["africa"]}, "for kind: continents"),
    ],
)
def test_bad_settings_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GeoSplit(**kwargs)


def test_a_region_that_splits_nothing_is_an_error():
    lat, lon, _ = _places()
    with pytest.raises(ValueError, match="no sample lies in the held-out"):
        assign(lat[:4], lon[:4], GeoSplit("continents", held_out=["oceania"]))


# ---- the datamodules -----------------------------------------------------------------------

GEO = {"kind": "continents", "held_out": ["africa"], "seed": 0, "in_region_fraction": 0.2}


@pytest.fixture(scope="module")
def embedded_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    EmbeddedDataModule(root=str(root), splits={"train": 60, "val": 20, "test": 20}).prepare_data()
    return root


def _images(dm, test_on: str) -> dict[str, set[str]]:
    dm.geo_split = GeoSplit(**{**GEO, "test_on": test_on})
    dm.setup("fit")
    dm.setup("test")
    out = {}
    for name in ("train", "val", "test"):
        dataset = getattr(dm, f"{name}_dataset")
        if hasattr(dataset, "table"):
            out[name] = set(dataset.table["filepath"])
        else:
            out[name] = {r["image"] for r in dataset.records}
    return out


def test_the_datamodules_split_each_image_once_and_alike(embedded_root):
    sizes = {"train": 60, "val": 20, "test": 20}
    table = EmbeddedDataModule(root=str(embedded_root), splits=sizes, geo_split=GEO)
    chat = EmbeddedConversationDataModule(root=str(embedded_root), splits=sizes, geo_split=GEO)
    for test_on in ("held_out", "in_region"):
        tables, chats = _images(table, test_on), _images(chat, test_on)
        assert tables == chats  # the table and the conversations split the images alike
        names = ("train", "val", "test")
        for i, a in enumerate(names):
            assert tables[a], f"{a} is empty"
            for b in names[i + 1 :]:
                assert not tables[a] & tables[b], f"an image in {a} and {b}"
    in_region = _images(table, "in_region")["test"]
    splits = _images(table, "held_out")
    assert not splits["test"] & in_region
    assert len(set().union(*splits.values(), in_region)) == 100  # every image, once
    rows = table.train_dataset.table
    assert (continent_of(rows["lat"], rows["lon"]) != "africa").all()
    rows = table.test_dataset.table
    assert (continent_of(rows["lat"], rows["lon"]) == "africa").all()


def test_test_on_both_is_for_evaluation_configs(embedded_root):
    dm = EmbeddedDataModule(
        root=str(embedded_root),
        splits={"train": 60, "val": 20, "test": 20},
        geo_split={**GEO, "test_on": "both"},
    )
    with pytest.raises(ValueError, match="test_on: both is for evaluation configs"):
        dm.setup("test")


def test_data_without_coordinates_is_a_clear_error(tmp_path):
    root = write_table_dataset(tmp_path / "table", location=False)
    dm = ImageTextLocationDataModule(root=str(root), geo_split=GEO)
    with pytest.raises(ValueError, match="no 'lat'/'lon' columns"):
        dm.setup("fit")
    records = [
        {
            "id": str(i),
            "image": f"images/train_{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nwhat is it?"},
                {"from": "gpt", "value": "forest"},
            ],
        }
        for i in range(4)
    ]
    for split in ("train", "val", "test"):
        (root / f"{split}.json").write_text(json.dumps(records))
    chat = ConversationDataModule(root=str(root), tasks=None, geo_split=GEO)
    with pytest.raises(ValueError, match="carry no coordinates .* geo_split.coordinates"):
        chat.setup("fit")
    # a coordinate table joins them by image
    lines = ["image,lat,lon"] + [f"images/train_{i}.png,{-1.0 + 20 * i},10.0" for i in range(4)]
    (root / "where.csv").write_text("\n".join(lines) + "\n")
    chat = ConversationDataModule(
        root=str(root), tasks=None, geo_split={**GEO, "coordinates": "where.csv", "val_fraction": 0}
    )
    chat.setup("test")
    held_out = {r["image"] for r in chat.test_dataset.records}
    assert held_out == {"images/train_0.png", "images/train_1.png"}  # Gabon, Niger


def test_shards_and_a_geo_split_together_are_an_error(tmp_path):
    """Shards hold the splits ``zoo optimize`` wrote: a second re-split would be silent."""
    with pytest.raises(ValueError, match="give geo_split to `zoo optimize`"):
        EmbeddedDataModule(root=str(tmp_path), streaming=str(tmp_path / "shards"), geo_split=GEO)
