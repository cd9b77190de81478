"""Geographic domain-shift splits: train on some regions, test on others.

Any dataset whose samples carry coordinates (``lat``, ``lon`` in degrees) is re-split by region,
from the coordinates alone (no download) and a fixed seed. Three kinds of region:

* ``blocks``: a grid of ``size_deg``-degree cells, each cell assigned whole to train, val or
  test at random (the seed) with probabilities ``fractions`` (about those shares of the cells,
  and of the samples where cells hold alike many); spatial
  block cross-validation (Roberts et al. 2017, "Cross-validation strategies for data with
  temporal, spatial, hierarchical, or phylogenetic structure", Ecography 40: 913-929): nearby
  samples are alike, so a random split measures interpolation, a block split extrapolation.
* ``continents``: a coarse continent lookup (:func:`continent_of`); the continents named in
  ``held_out`` are the test split.
* ``latitude_bands``: the latitude ranges named in ``bands`` (of ``|lat|`` by default) are the
  test split, e.g. train on ``|lat| < 30`` and test on ``|lat| >= 30``.

For continents and latitude bands the in-region samples are divided into train and val by
spatial blocks (``val_fraction`` of them validate). In every kind, ``in_region_fraction`` of the
training regions' samples are held out at random, location by location: the *in-region* test set (the
same regions as training, unseen samples), beside the *held-out* test set (unseen regions). The
difference of a metric between the two is the geographic shift (docs/evaluation.md).

Every random choice is a keyed hash of the seed and the sample's cell or coordinates, so a
sample's split depends on its coordinates and the settings alone: a data config with more or
fewer images (a generator's 400 training images, an evaluation's 2000) splits the images they
share alike, and no trained image reaches a test split.

:func:`assign` does the assignment (numpy over all samples); :func:`geo_dataset` applies it to
a datamodule's datasets (the ``geo_split`` argument of every zoo datamodule).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "CONTINENTS",
    "GEO_SPLITS",
    "GeoSplit",
    "assign",
    "block_ids",
    "check_coordinates",
    "continent_of",
    "geo_dataset",
]

log = logging.getLogger(__name__)

#: The split codes :func:`assign` returns, by position.
GEO_SPLITS: tuple[str, ...] = ("train", "val", "held_out", "in_region")
_TRAIN, _VAL, _HELD_OUT, _IN_REGION = range(4)

CONTINENTS: tuple[str, ...] = (
    "africa",
    "antarctica",
    "asia",
    "europe",
    "north_america",
    "oceania",
    "south_america",
)
"""The continent names of :func:`continent_of` and ``held_out``."""

# Hand-made on purpose: geopandas >= 1.0 no longer ships its naturalearth_lowres dataset (its
# replacement, geodatasets, downloads), shapely ships no data, and the copy inside pyogrio is a
# test fixture, not an API. Coastline polygons would also leave coastal scenes (harbours) and
# small islands in the sea, with no continent; boxes cover the whole globe. Each row is
# (continent, lat_min, lat_max, lon_min, lon_max), half-open [min, max); the first row that
# contains a point names its continent; the last row catches everything left (Asia and the
# Indian Ocean). Borders are coarse (a degree or so): Sinai, the Bosporus, Eritrea's coast.
_BOXES: tuple[tuple[str, float, float, float, float], ...] = (
    ("antarctica", -90.0, -60.0, -180.0, 181.0),
    ("north_america", 7.0, 33.0, -120.0, -77.2),  # Mexico, Central America, the US south
    ("north_america", 12.5, 33.0, -85.0, -59.0),  # the Caribbean, Bermuda
    ("south_america", -60.0, 13.0, -93.0, -26.0),
    ("oceania", -60.0, 30.0, -180.0, -93.0),  # Hawaii, Polynesia, Easter Island
    ("europe", 62.5, 67.5, -25.0, -12.0),  # Iceland
    ("asia", 60.0, 75.0, -180.0, -168.5),  # Chukotka
    ("north_america", 59.0, 85.0, -75.0, -10.0),  # Greenland
    ("north_america", 13.0, 91.0, -180.0, -40.0),  # Alaska to Newfoundland
    ("africa", -60.0, 36.0, -40.0, -1.0),  # Morocco, West Africa (Spain lies north)
    ("africa", -60.0, 37.4, -1.0, 12.0),  # Algeria, Tunisia (Spain, Sardinia lie north)
    ("asia", 29.0, 42.0, 34.2, 63.0),  # the Levant, Mesopotamia, Iran, the Caucasus
    ("asia", 35.8, 41.0, 26.5, 34.2),  # western Anatolia
    ("asia", 25.0, 29.0, 35.0, 63.0),  # Arabia, along the Red Sea's coast
    ("asia", 20.0, 25.0, 37.5, 63.0),
    ("asia", 15.0, 20.0, 40.5, 63.0),
    ("asia", 12.0, 15.0, 43.0, 63.0),
    ("africa", -60.0, 34.0, 12.0, 63.0),  # Libya, Egypt, the east, Madagascar
    ("europe", 34.0, 91.0, -40.0, 50.0),  # to the Caspian, with Crete and Cyprus
    ("europe", 52.0, 91.0, 50.0, 60.0),  # to the Urals
    ("oceania", -60.0, -11.0, 95.0, 181.0),  # Australia, New Zealand
    ("oceania", -60.0, 0.0, 130.8, 181.0),  # New Guinea, Melanesia
    ("oceania", 0.0, 24.0, 131.0, 181.0),  # Micronesia
    ("asia", -90.0, 91.0, -180.0, 181.0),  # the rest
)


@dataclass(frozen=True)
class GeoSplit:
    """How to split a dataset by region (YAML: ``geo_split: {kind: blocks, size_deg: 10}``).

    Attributes:
        kind: ``blocks``, ``continents`` or ``latitude_bands``.
        seed: the seed of every random choice (which blocks go where, the in-region samples).
        size_deg: the side of the grid's cells, in degrees (``blocks``; for the other kinds the
            cells that divide the in-region samples into train and val).
        fractions: the probabilities of a cell to go to train, val and test (``blocks`` only):
            about those shares of the cells, of the samples where the cells hold alike many.
        held_out: the continents of the test split (``continents`` only; :data:`CONTINENTS`).
        bands: latitude ranges ``[low, high)`` of the test split (``latitude_bands`` only), in
            degrees; of ``|lat|`` when ``absolute_latitude``.
        absolute_latitude: the bands are ranges of ``|lat|`` (both hemispheres alike).
        val_fraction: the share of the in-region samples that validate (``continents`` and
            ``latitude_bands``; whole cells of ``size_deg``).
        in_region_fraction: the share of the training regions' samples held out at random
            (one by one), the in-region test set.
        test_on: what the test split holds: ``held_out`` (the unseen regions), ``in_region``
            (unseen samples of the training regions) or ``both`` (an evaluation config only:
            ``zoo evaluate`` runs it once on each and prints them side by side).
        coordinates: a CSV (relative to the data root, or absolute) with an image column
            (``image`` or ``filepath``) and ``lat`` / ``lon``, for samples that do not carry
            their coordinates (conversation records): joined by image path.
    """

    kind: Literal["blocks", "continents", "latitude_bands"]
    seed: int = 0
    size_deg: float = 10.0
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    held_out: list[str] = field(default_factory=list)
    bands: list[tuple[float, float]] = field(default_factory=list)
    absolute_latitude: bool = True
    val_fraction: float = 0.1
    in_region_fraction: float = 0.1
    test_on: Literal["held_out", "in_region", "both"] = "held_out"
    coordinates: str | None = None

    def __post_init__(self) -> None:
        where = "geo_split"
        if self.kind not in ("blocks", "continents", "latitude_bands"):
            raise ValueError(
                f"{where}.kind {self.kind!r}: use blocks, continents or latitude_bands"
            )
        if not self.size_deg > 0:
            raise ValueError(f"{where}.size_deg must be > 0 degrees, got {self.size_deg}")
        fractions = np.asarray(self.fractions, dtype=float)
        if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1):
            raise ValueError(
                f"{where}.fractions must be three shares >= 0 (train, val, test) that sum to 1, "
                f"got {list(self.fractions)}"
            )
        for name in ("val_fraction", "in_region_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{where}.{name} must be in [0, 1), got {value}")
        if self.kind == "continents":
            if not self.held_out:
                raise ValueError(
                    f"{where}.held_out: name the test continents, some of {list(CONTINENTS)}"
                )
            unknown = [c for c in self.held_out if _continent_key(c) not in CONTINENTS]
            if unknown:
                raise ValueError(
                    f"{where}.held_out: unknown continent(s) {unknown}; use {list(CONTINENTS)}"
                )
        elif self.held_out:
            raise ValueError(f"{where}.held_out is for kind: continents, not {self.kind}")
        if self.kind == "latitude_bands":
            if not self.bands:
                raise ValueError(
                    f"{where}.bands: name the test latitude ranges, e.g. [[30, 90]] (|lat| >= 30)"
                )
            for band in self.bands:
                low, high = band
                if not -90 <= low < high <= 90:
                    raise ValueError(
                        f"{where}.bands: {list(band)} must be [low, high) with "
                        "-90 <= low < high <= 90 degrees"
                    )
        elif self.bands:
            raise ValueError(f"{where}.bands is for kind: latitude_bands, not {self.kind}")


def _continent_key(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _names(names: Sequence[str] | None, index: np.ndarray) -> str:
    shown = [str(names[i]) if names is not None else f"sample {i}" for i in index[:5]]
    more = f" and {len(index) - 5} more" if len(index) > 5 else ""
    return ", ".join(shown) + more


def check_coordinates(
    lat: Any, lon: Any, names: Sequence[str] | None = None, where: str = "the data"
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates as float64 arrays, checked: finite, ``|lat| <= 90``, ``|lon| <= 180``.

    Args:
        lat: latitudes in degrees, one per sample.
        lon: longitudes in degrees, one per sample.
        names: the samples' names (file paths, ids) for the messages; None: their index.
        where: names the data in the messages.

    Returns:
        ``(lat, lon)`` as float64 arrays.

    Raises:
        ValueError: the lengths differ, or a value is not a number in range (the message names
            the first samples and their values).
    """
    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.shape != lon.shape or (names is not None and len(names) != len(lat)):
        raise ValueError(
            f"{where}: {len(lat)} latitudes, {len(lon)} longitudes"
            + ("" if names is None else f", {len(names)} names")
            + ": give one of each per sample"
        )
    for values, bound, word in ((lat, 90.0, "latitude"), (lon, 180.0, "longitude")):
        bad = np.flatnonzero(~(np.abs(values) <= bound))  # NaN is bad too
        if bad.size:
            raise ValueError(
                f"{where}: {word} {float(values[bad[0]])!r} of {_names(names, bad)} is not a number in "
                f"[-{bound:g}, {bound:g}] degrees: fix the sample's coordinates (lat, lon order?)"
            )
    return lat, lon


def continent_of(lat: Any, lon: Any) -> np.ndarray:
    """The continent of each point, from a coarse table of lat/lon boxes (no download).

    Every point on the globe gets one (the sea takes the nearby continent's box): see
    :data:`CONTINENTS`.

    Args:
        lat: latitudes in degrees.
        lon: longitudes in degrees.

    Returns:
        An array of continent names, one per point.
    """
    lat, lon = check_coordinates(lat, lon)
    out = np.full(lat.shape, -1, dtype=np.int64)
    for name, lat0, lat1, lon0, lon1 in _BOXES:
        inside = (out < 0) & (lat >= lat0) & (lat < lat1) & (lon >= lon0) & (lon < lon1)
        out[inside] = CONTINENTS.index(name)
    return np.asarray(CONTINENTS, dtype=object)[out]


def block_ids(lat: Any, lon: Any, size_deg: float) -> np.ndarray:
    """The grid cell of each point: ``row * n_cols + col`` of ``size_deg``-degree cells.

    Latitude 90 and longitude 180 fall in the last row and column.

    Args:
        lat: latitudes in degrees.
        lon: longitudes in degrees.
        size_deg: the cells' side in degrees.

    Returns:
        An int64 cell id per point.
    """
    lat, lon = check_coordinates(lat, lon)
    rows, cols = int(np.ceil(180.0 / size_deg)), int(np.ceil(360.0 / size_deg))
    row = np.minimum(np.floor((lat + 90.0) / size_deg).astype(np.int64), rows - 1)
    col = np.minimum(np.floor((lon + 180.0) / size_deg).astype(np.int64), cols - 1)
    return row * cols + col


def _uniform(columns: dict[str, Any]) -> np.ndarray:
    """A number in [0, 1) per row, a fixed function of the row's values (pandas' keyed hash,
    vectorized and stable), so a sample's split depends on its own coordinates only."""
    hashed = pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy()
    return (hashed >> np.uint64(11)).astype(np.float64) / 2.0**53


def _cells_to_splits(
    cells: np.ndarray, fractions: Sequence[float], seed: int, what: str
) -> np.ndarray:
    """Each sample's split (0, 1, 2 by ``fractions``), whole cells at a time.

    A cell draws its split with probabilities ``fractions`` from a hash of (seed, cell): the
    same cell goes to the same split whichever samples are pooled with it (a data config with
    more images never moves a training cell into the test split).
    """
    u = _uniform({"seed": np.full(len(cells), seed, dtype=np.int64), "tag": 1, "cell": cells})
    codes = np.searchsorted(np.cumsum(fractions)[:-1], u, side="right")
    empty = [i for i, f in enumerate(fractions) if f > 0 and not (codes == i).any()]
    if empty:
        raise ValueError(
            f"geo_split: the {len(np.unique(cells))} grid cell(s) of {what} leave split(s) "
            f"{[('train', 'val', 'test')[i] for i in empty]} empty: make size_deg smaller "
            "(more, smaller cells), change the seed, or set that fraction to 0"
        )
    return codes


def assign(
    lat: Any,
    lon: Any,
    split: GeoSplit,
    names: Sequence[str] | None = None,
    where: str = "the data",
) -> np.ndarray:
    """Each sample's split: an index into :data:`GEO_SPLITS` (train, val, held_out, in_region).

    A sample's split is a function of its coordinates and ``split`` alone (its seed included):
    neither the other samples nor their order change it.

    Args:
        lat: latitudes in degrees, one per sample.
        lon: longitudes in degrees, one per sample.
        split: the geographic split.
        names: the samples' names for error messages (None: their index).
        where: names the data in error messages.

    Returns:
        An int64 array of split codes.

    Raises:
        ValueError: a coordinate is out of range (naming the sample), or a split would be empty.
    """
    lat, lon = check_coordinates(lat, lon, names, where)
    blocks = block_ids(lat, lon, split.size_deg)
    codes = np.empty(lat.shape, dtype=np.int64)
    if split.kind == "blocks":
        codes[:] = _cells_to_splits(blocks, split.fractions, split.seed, where)
        codes[codes == 2] = _HELD_OUT
    else:
        if split.kind == "continents":
            wanted = {_continent_key(c) for c in split.held_out}
            continent = continent_of(lat, lon)
            held = np.isin(continent, sorted(wanted))
            what = f"continent(s) {sorted(wanted)}"
            found = dict(zip(*np.unique(continent, return_counts=True), strict=True))
        else:
            value = np.abs(lat) if split.absolute_latitude else lat
            held = np.zeros(lat.shape, dtype=bool)
            for low, high in split.bands:
                held |= (value >= low) & ((value < high) | ((high == 90.0) & (value == 90.0)))
            what = f"latitude band(s) {[list(b) for b in split.bands]}"
            found = {"min |lat|" if split.absolute_latitude else "min lat": float(value.min())}
            found["max |lat|" if split.absolute_latitude else "max lat"] = float(value.max())
        if held.all() or not held.any():
            raise ValueError(
                f"geo_split on {where}: {'every' if held.all() else 'no'} sample lies in the "
                f"held-out {what} ({found}); choose held-out regions that split the data"
            )
        codes[held] = _HELD_OUT
        inside = ~held
        codes[inside] = _cells_to_splits(
            blocks[inside], (1.0 - split.val_fraction, split.val_fraction, 0.0), split.seed, where
        )
    # the in-region test samples: a draw per location (+ 0.0 makes -0.0 and 0.0 one location)
    u = _uniform(
        {"seed": np.full(len(lat), split.seed), "tag": 2, "lat": lat + 0.0, "lon": lon + 0.0}
    )
    codes[(codes == _TRAIN) & (u < split.in_region_fraction)] = _IN_REGION
    return codes


def _dataset_split(split: str, geo: GeoSplit) -> int:
    if split == "train":
        return _TRAIN
    if split == "val":
        return _VAL
    if geo.test_on == "both":
        raise ValueError(
            "geo_split.test_on: both is for evaluation configs (zoo evaluate runs the "
            "evaluation once per region); a datamodule's test split needs held_out or in_region"
        )
    return _HELD_OUT if geo.test_on == "held_out" else _IN_REGION


def _coordinate_table(dm: Any, geo: GeoSplit) -> pd.DataFrame | None:
    """``image -> lat, lon`` from ``geo.coordinates``, else the embedded dataset's tables."""
    from zoo.data.image_text import read_table, validate_location

    root = dm.dataset_root
    if geo.coordinates is not None:
        path = Path(geo.coordinates)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise FileNotFoundError(f"geo_split.coordinates: {path} does not exist")
        table = pd.read_csv(path)
        column = next((c for c in ("image", "filepath") if c in table.columns), None)
        if column is None or "lat" not in table.columns:
            raise ValueError(
                f"{path}: a coordinate table needs an 'image' (or 'filepath') column and "
                f"'lat', 'lon'; found {list(table.columns)}"
            )
        table = validate_location(table.rename(columns={column: "filepath"}), path)
        return table[["filepath", "lat", "lon"]]
    if dm.source is None:
        return None
    tables = [read_table(root / f"{s}.csv") for s in ("train", "val", "test")]
    return pd.concat(tables, ignore_index=True)[["filepath", "lat", "lon"]]


def _record_coordinates(
    records: list[dict[str, Any]], dm: Any, geo: GeoSplit, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """The records' ``lat``/``lon`` (or ``location``), else joined from a table by image."""
    if records and all("lat" in r and "lon" in r for r in records):
        return (np.array([r["lat"] for r in records]), np.array([r["lon"] for r in records]))
    if records and all("location" in r for r in records):
        pairs = np.array([r["location"] for r in records], dtype=np.float64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1]
    table = _coordinate_table(dm, geo)
    if table is None:
        raise ValueError(
            f"geo_split: the records of {where} carry no coordinates ('lat'/'lon' or "
            "'location'): add them to the records, or name a CSV of image, lat, lon in "
            "geo_split.coordinates"
        )
    table = table.drop_duplicates("filepath").set_index("filepath")
    images = pd.Index([str(r["image"]) for r in records])
    found = images.isin(table.index)
    if not found.all():
        missing = sorted(set(images[~found]))
        raise ValueError(
            f"geo_split: {len(missing)} image(s) of {where} have no coordinates in the "
            f"coordinate table, e.g. {missing[:3]}: add their rows"
        )
    rows = table.loc[images]
    return rows["lat"].to_numpy(), rows["lon"].to_numpy()


def _image_codes(
    images: Sequence[str], lat: Any, lon: Any, geo: GeoSplit, where: str
) -> tuple[dict[str, int], np.ndarray]:
    """The split code of each distinct image (its first coordinates).

    Samples that share an image (a caption and a VQA record) share its split.

    Returns:
        ``image -> code`` and the count of images per code.
    """
    frame = pd.DataFrame({"image": list(images), "lat": lat, "lon": lon})
    frame = frame.drop_duplicates("image").sort_values("image", kind="stable")
    names = frame["image"].tolist()
    codes = assign(frame["lat"].to_numpy(), frame["lon"].to_numpy(), geo, names, where)
    return dict(zip(names, codes.tolist(), strict=True)), np.bincount(codes, minlength=4)


def geo_dataset(dm: Any, split: str) -> Any:
    """``split``'s dataset of ``dm``, its samples those of every split of the data that the
    geographic split ``dm.geo_split`` assigns to it.

    The dataset's own train, val and test are pooled and re-split by region, image by image;
    the result is the datamodule's own dataset class with its samples replaced, so every
    setting still applies.

    Args:
        dm: a zoo datamodule (:class:`~zoo.data.datamodules.ZooDataModule`; not imported here,
            which imports this module) with ``geo_split`` set.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The dataset.

    Raises:
        ValueError: the dataset has no coordinates, a coordinate is out of range, or the split
            would be empty.
    """
    from zoo.data.conversations import ConversationDataset, read_conversations
    from zoo.data.image_text import ImageTextLocationDataset

    geo: GeoSplit = dm.geo_split
    wanted = _dataset_split(split, geo)
    dataset = dm._dataset(split)
    where = f"{type(dm).__name__} at {dm.dataset_root}"
    if isinstance(dataset, ImageTextLocationDataset):
        if not dataset.has_location:
            raise ValueError(
                f"geo_split: {dataset.table_path} has no 'lat'/'lon' columns: a geographic split "
                "needs each sample's coordinates (add the columns)"
            )
        tables = [dataset.table if s == split else dm._dataset(s).table for s in SPLITS]
        pooled = pd.concat(tables, ignore_index=True)
        images = pooled["filepath"].astype(str)
        codes, counts = _image_codes(images, pooled["lat"], pooled["lon"], geo, where)
        keep = images.map(codes).to_numpy() == wanted
        dataset.table = pooled[keep].reset_index(drop=True)
        dataset.table_path = Path(f"{dataset.table_path} (geographic {split} split)")
        kept = len(dataset.table)
    elif isinstance(dataset, ConversationDataset) and hasattr(dm, "files"):
        train = split == "train"
        tasks = dm.tasks if train else dm.eval_tasks
        everything = [r for s in SPLITS for r in read_conversations(dm.dataset_root / dm.files[s])]
        lat, lon = _record_coordinates(everything, dm, geo, where)
        images = [str(r["image"]) for r in everything]
        codes, counts = _image_codes(images, lat, lon, geo, where)
        records: list[dict[str, Any]] = []
        for s in SPLITS:
            if s == split:
                records += dataset.records
            else:
                records += ConversationDataset(
                    dm.dataset_root, dm.files[s], tasks=tasks, single_turn=not train
                ).records
        dataset = copy.copy(dataset)
        dataset.records = [r for r in records if codes[str(r["image"])] == wanted]
        dataset.path = Path(f"{dataset.path} (geographic {split} split)")
        kept = len(dataset.records)
    else:
        raise ValueError(
            f"geo_split: {type(dataset).__name__} ({where}) gives no sample coordinates; "
            "geographic splits work on image-text-location tables (lat/lon columns) and "
            "conversation records (lat/lon, or a coordinate table in geo_split.coordinates)"
        )
    per_split = dict(zip(GEO_SPLITS, counts.tolist(), strict=True))
    if kept == 0:
        raise ValueError(
            f"geo_split {geo}: no sample of {where} falls in its {split} split (images per "
            f"split: {per_split}): change the fractions, regions or size_deg"
        )
    log.info(
        "geographic %s split (%s) of %s: %d samples; images per split %s",
        split,
        geo.kind,
        where,
        kept,
        per_split,
    )
    return dataset


SPLITS: tuple[str, ...] = ("train", "val", "test")
