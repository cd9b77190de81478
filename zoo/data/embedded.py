"""The embedded dataset: a deterministic generator of geo-located synthetic remote-sensing scenes.

No real dataset can be downloaded, so the zoo writes its own, on disk and in the formats of
the real data, so that the real loaders read it:

* ``images/{split}/{split}_{index:05d}.png``: RGB uint8 images.
* ``{split}.csv``: torchgeo's SkyScript caption table plus location and scene label
  (columns ``filepath,title,lat,lon,label``).
* ``conversations_{split}.json``: LLaVA conversations (short caption, long description and a
  multi-turn VQA record per image).
* ``instances_{split}.json``: COCO instances (boxes, RLE masks) with ``lat``/``lon``/``scene``
  on each image and ``colour`` on each annotation.
* ``refs_{split}.json``: RefCOCO / RRSIS-D style referring expressions.
* ``metadata.json``: the generation parameters, written last: its presence marks a complete
  dataset.

Each image shows one of :data:`SCENE_CLASSES` with a class-typical mix of
:data:`OBJECT_CATEGORIES` drawn as rotated polygons and ellipses (later objects occlude
earlier ones; masks are the visible parts). A location is drawn per image from class-dependent
regional clusters, and the vegetation, soil and water palettes depend on it, so that location
carries visual signal. All texts are built from the scene graph, so counts, colours and
positions in captions, answers and referring expressions agree with the annotations.

Everything is seeded per ``(seed, split, index)``: an image does not depend on the order of
generation nor on the size of another split.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

__all__ = [
    "DATASET_VERSION",
    "OBJECT_CATEGORIES",
    "QUESTION_TYPES",
    "SCENE_CLASSES",
    "SPLITS",
    "generate",
    "is_complete",
    "vocabulary",
]

log = logging.getLogger(__name__)

DATASET_VERSION = 2
#: Nominal ground size of one unit of the 64-unit design canvas: a scene spans ~320 m, so each
#: image has a ground sample distance (``gsd_m`` in the COCO images) and is georeferenced by its
#: centre (lat, lon).
DESIGN_UNIT_M = 5.0
"""Bumped whenever the generated content changes; part of :func:`is_complete`'s check."""

SCENE_CLASSES: tuple[str, ...] = (
    "residential",
    "industrial",
    "farmland",
    "forest",
    "lake",
    "airport",
    "harbour",
    "desert",
    "snow",
    "river",
)
"""Scene classes; the position is the label index."""

OBJECT_CATEGORIES: tuple[str, ...] = (
    "building",
    "road",
    "tree",
    "vehicle",
    "ship",
    "storage tank",
    "plane",
    "field",
)
"""Object categories; COCO category id ``i + 1`` for position ``i``."""

QUESTION_TYPES: tuple[str, ...] = ("presence", "count", "position", "colour", "category")
"""Types of the generated VQA questions."""

SPLITS: tuple[str, ...] = ("train", "val", "test")

NAME = "zoo-embedded"
MAX_OBJECTS = 64
"""At most this many objects are drawn in one image, so counts are ``0..MAX_OBJECTS``."""

_SPLIT_IDS = {split: i for i, split in enumerate(SPLITS)}
_TAG_IMAGE, _TAG_LABEL = 1, 2  # first entropy word: separates the seed streams
_SUPERCATEGORIES = {
    "building": "structure",
    "road": "transport",
    "tree": "vegetation",
    "vehicle": "vehicle",
    "ship": "vehicle",
    "storage tank": "structure",
    "plane": "vehicle",
    "field": "land",
}
# Nominal object area in (64-pixel-canvas units)^2, for the "small"/"large" size words.
_NOMINAL_AREA: dict[str, float | None] = {
    "building": 45.0,
    "road": None,  # no size words for roads
    "tree": 24.0,
    "vehicle": 9.0,
    "ship": 40.0,
    "storage tank": 40.0,
    "plane": 60.0,
    "field": 250.0,
}
_NO_POSITION = frozenset({"road"})  # elongated objects: a centroid position would mislead

# ----------------------------------------------------------------------------------------------
# Words and templates. Every text the generator writes is built from these constants only, so
# that :func:`vocabulary` can list every word without scanning generated files.
# ----------------------------------------------------------------------------------------------

_SCENE_PHRASES = {  # noun phrase, with article where English wants one
    "residential": "a residential area",
    "industrial": "an industrial area",
    "farmland": "farmland",
    "forest": "a forest",
    "lake": "a lake",
    "airport": "an airport",
    "harbour": "a harbour",
    "desert": "a desert",
    "snow": "a snow covered landscape",
    "river": "a river",
}
_GROUND_SENTENCES = {
    "residential": "Houses and streets fill the area.",
    "industrial": "The ground is mostly paved with concrete.",
    "farmland": "The land is divided into cultivated plots.",
    "forest": "Dense tree cover fills the scene.",
    "lake": "A large body of water covers part of the image.",
    "airport": "Paved runways and taxiways cross the scene.",
    "harbour": "The coast separates the water from the paved docks.",
    "desert": "Sand dunes cover the ground.",
    "snow": "The ground is covered with snow.",
    "river": "A river winds through the landscape.",
}
_COLOUR_RGB: dict[str, tuple[float, float, float]] = {
    "red": (176, 58, 48),
    "white": (226, 226, 220),
    "grey": (130, 130, 128),
    "black": (44, 44, 48),
    "blue": (52, 86, 168),
    "green": (58, 118, 52),
    "brown": (124, 88, 56),
    "yellow": (212, 186, 74),
    "orange": (214, 126, 52),
}
_CELLS = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
    "bottom right",
)  # fmt: skip
_POSITION_PHRASES = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
_SIZE_WORDS = ("small", "large")
_SUPERLATIVES = {"largest": ("largest", "biggest"), "smallest": ("smallest",)}
_EXTREMES = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "lowest"}
_RELATIONS = {
    "left": "left of",
    "right": "right of",
    "above": "above",
    "below": "below",
    "near": "closest to",
}
_HEMISPHERES = ("northern", "southern")
_BANDS = ("tropics", "subtropics", "mid latitudes", "high latitudes")
_VEGETATION_WORDS = ("lush", "dry", "green", "sparse")
_JOINERS = (",", "and")
_ARTICLES = ("a", "an")
_ANSWERS_YES_NO = ("yes", "no")
_IMAGE_TOKEN = "<image>"
_PROMPT_CAPTION = "Describe the image briefly."
_PROMPT_DESCRIPTION = "Describe the image in detail."

_CAPTIONS_COUNTS = (
    "a satellite image of {np} with {counts}.",
    "an aerial image of {np} with {counts}.",
    "a remote sensing image of {np} showing {counts}.",
    "{np} with {counts}.",
    "{scene_a} scene with {counts}.",
    "an overhead view of {np} containing {counts}.",
)
_CAPTIONS_PLAIN = (
    "a satellite image of {np}.",
    "an aerial view of {np}.",
    "{scene_a} scene seen from above.",
    "a remote sensing image of {np}.",
)
_CAPTIONS_OBJECT = (
    "{obj_a} {pos} of {np}.",
    "a satellite image of {np} with {obj_a} {pos}.",
)
_CAPTIONS_NO_SCENE = (
    "an aerial image with {counts}.",
    "a satellite image showing {counts}.",
)
_DESC_OPENERS = (
    "This is a satellite image of {np}.",
    "The image shows {np} seen from above.",
    "An aerial photograph of {np}.",
)
_DESC_VEGETATION = ("The vegetation looks {veg}.", "The plants in the area look {veg}.")
_DESC_COUNTS = ("It contains {counts}.", "There are {counts} in the image.")
_DESC_EMPTY = ("No distinct objects are visible.", "The scene contains no distinct objects.")
_DESC_OBJECT = ("{obj_a} is {pos}.", "There is {obj_a} {pos}.")
_DESC_LARGEST = ("The largest {c} is {colour}.",)
_DESC_LOCATION = (
    "The image was taken in the {band} of the {hemi} hemisphere.",
    "The scene is located in the {hemi} hemisphere, in the {band}.",
)
_Q_SCENE = (
    "what kind of scene is this?",
    "what type of area is shown in the image?",
    "what is the scene category of this image?",
)
_Q_PRESENCE = ("is there {c_a} in the image?", "is there {c_a}?", "are there any {p}?")
_Q_COUNT = (
    "how many {p} are there?",
    "how many {p} are in the image?",
    "what is the number of {p}?",
    "how many {p} can be seen?",
)
_Q_POSITION = (
    "where is the {c}?",
    "where is the {c} located?",
    "in which part of the image is the {c}?",
)
_Q_COLOUR = ("what colour is {ref}?", "what is the colour of {ref}?")
_Q_OBJECT = ("what is the object {pos}?", "which object is {pos}?")
_REF_TEMPLATES = (
    "the {c}",
    "the {adj} {c}",
    "the {adj} {c} {pos}",
    "the {c} {pos}",
    "the {sup} {c}",
    "the {ext} {c}",
    "the {c} {rel} the {anchor}",
)

_TOKEN = re.compile(r"\w+|[^\w\s]")
_FIELD = re.compile(r"\{\w*\}")


def _tokenize(text: str) -> list[str]:
    """Lower-case words and single punctuation characters (BERT basic pre-tokenisation)."""
    return _TOKEN.findall(text.lower())


def vocabulary() -> list[str]:
    """Every token any generated text can contain, sorted.

    Tokens are lower-case words and punctuation characters, split as a BERT basic tokenizer
    does; digit strings (counts ``0..MAX_OBJECTS``) are words. The list is built from the
    template word lists, not by scanning generated files; it also covers the LLaVA prompts
    (``<image>`` tokenises to ``<``, ``image``, ``>``).
    """
    texts: list[str] = [
        *SCENE_CLASSES,
        *OBJECT_CATEGORIES,
        *(_plural(c) for c in OBJECT_CATEGORIES),
        *QUESTION_TYPES,
        *_SCENE_PHRASES.values(),
        *_GROUND_SENTENCES.values(),
        *_COLOUR_RGB,
        *_CELLS,
        *_POSITION_PHRASES.values(),
        *_SIZE_WORDS,
        *(w for words in _SUPERLATIVES.values() for w in words),
        *_EXTREMES.values(),
        *_RELATIONS.values(),
        *_HEMISPHERES,
        *_BANDS,
        *_VEGETATION_WORDS,
        *_JOINERS,
        *_ARTICLES,
        *_ANSWERS_YES_NO,
        _IMAGE_TOKEN,
        _PROMPT_CAPTION,
        _PROMPT_DESCRIPTION,
        *_CAPTIONS_COUNTS,
        *_CAPTIONS_PLAIN,
        *_CAPTIONS_OBJECT,
        *_CAPTIONS_NO_SCENE,
        *_DESC_OPENERS,
        *_DESC_VEGETATION,
        *_DESC_COUNTS,
        *_DESC_EMPTY,
        *_DESC_OBJECT,
        *_DESC_LARGEST,
        *_DESC_LOCATION,
        *_Q_SCENE,
        *_Q_PRESENCE,
        *_Q_COUNT,
        *_Q_POSITION,
        *_Q_COLOUR,
        *_Q_OBJECT,
        *_REF_TEMPLATES,
    ]
    words = {w for text in texts for w in _tokenize(_FIELD.sub(" ", text))}
    words.update(str(n) for n in range(MAX_OBJECTS + 1))
    return sorted(words)


# ----------------------------------------------------------------------------------------------
# Locations and climate
# ----------------------------------------------------------------------------------------------

# Regional clusters per class: (lat, lon, spread in degrees).
_REGIONS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "residential": (
        (48.5, 9.0, 4.0), (40.5, -76.0, 3.0), (35.5, 137.0, 2.5), (-23.5, -46.6, 2.5),
        (6.5, 3.4, 2.0), (-33.9, 151.0, 2.0),
    ),
    "industrial": (
        (51.4, 7.0, 2.0), (31.2, 121.5, 2.5), (42.3, -83.0, 2.5), (19.0, 73.0, 2.0),
        (-26.2, 28.0, 2.0),
    ),
    "farmland": (
        (41.5, -93.5, 4.0), (49.0, 32.0, 4.0), (27.0, 79.0, 3.0), (-34.0, -61.0, 4.0),
        (35.0, 115.0, 3.0),
    ),
    "forest": (
        (-5.0, -62.0, 5.0), (0.5, 20.0, 4.0), (1.0, 114.0, 3.0), (60.0, 100.0, 6.0),
        (47.0, -122.0, 3.0),
    ),
    "lake": (
        (62.0, 26.0, 3.0), (45.0, -85.0, 3.0), (-1.0, 33.0, 1.5), (55.0, -100.0, 5.0),
        (53.0, 108.0, 2.0),
    ),
    "airport": (
        (40.6, -73.8, 2.0), (51.5, -0.4, 2.0), (25.2, 55.4, 2.0), (35.6, 139.8, 2.0),
        (-33.9, 151.2, 2.0), (1.4, 104.0, 2.0),
    ),
    "harbour": (
        (51.9, 4.2, 1.5), (1.3, 103.8, 1.5), (31.2, 121.6, 1.5), (33.7, -118.2, 1.5),
        (-33.9, 18.4, 1.5), (53.5, 9.9, 1.5),
    ),
    "desert": (
        (23.0, 10.0, 5.0), (23.0, 47.0, 4.0), (-25.0, 130.0, 5.0), (-23.5, -69.5, 2.0),
        (32.0, -113.0, 3.0),
    ),
    "snow": (
        (70.0, 40.0, 6.0), (67.0, -100.0, 7.0), (-78.0, 40.0, 6.0), (46.5, 9.0, 1.5),
        (72.0, -40.0, 3.0),
    ),
    "river": (
        (-3.0, -60.0, 3.0), (27.0, 31.0, 3.0), (33.0, -91.0, 3.0), (25.0, 85.0, 3.0),
        (45.0, 20.0, 3.0), (30.0, 114.0, 3.0),
    ),
}  # fmt: skip

_LAT_ANCHORS = np.array([0.0, 15.0, 30.0, 42.0, 55.0, 68.0, 90.0])
_VEG_PALETTE = np.array(
    [(30, 108, 42), (52, 116, 46), (128, 122, 70), (104, 114, 60), (64, 96, 56), (82, 92, 70),
     (120, 120, 112)], dtype=np.float64,
)  # fmt: skip
_SOIL_PALETTE = np.array(
    [(132, 78, 52), (150, 100, 64), (184, 150, 104), (150, 120, 86), (118, 100, 80),
     (112, 104, 96), (130, 126, 120)], dtype=np.float64,
)  # fmt: skip
_WATER_PALETTE = np.array(
    [(36, 104, 118), (36, 96, 116), (36, 82, 112), (34, 72, 104), (32, 62, 92), (30, 56, 80),
     (40, 60, 80)], dtype=np.float64,
)  # fmt: skip
_PAVED = np.array((156, 152, 142), dtype=np.float64)
_CONCRETE = np.array((150, 148, 142), dtype=np.float64)
_ASPHALT = np.array((92, 92, 96), dtype=np.float64)


@dataclass(frozen=True)
class _Climate:
    """Location-dependent palettes (RGB float arrays) and words."""

    veg: np.ndarray
    soil: np.ndarray
    water: np.ndarray
    sand: np.ndarray
    rock_fraction: float
    vegetation_word: str
    band: str
    hemisphere: str


def _climate(lat: float, lon: float) -> _Climate:
    """Palettes by latitude band, with a hemisphere tint and a small longitude modulation."""
    a = abs(lat)
    h = math.tanh(lat / 8.0)  # +1 north, -1 south
    tint = np.array((1.0 - 0.05 * h, 1.0, 1.0 + 0.06 * h))  # the south is warmer in tone
    wobble = 1.0 + 0.05 * math.sin(math.radians(lon))

    def interp(palette: np.ndarray) -> np.ndarray:
        return np.array([np.interp(a, _LAT_ANCHORS, palette[:, k]) for k in range(3)])

    veg = interp(_VEG_PALETTE) * tint * np.array((1.0, wobble, 1.0))
    soil = interp(_SOIL_PALETTE) * tint
    water = interp(_WATER_PALETTE) * tint
    redness = 0.5 + 0.5 * math.sin(math.radians(lon))
    sand = (np.array((222, 188, 132)) * (1 - redness) + np.array((200, 124, 78)) * redness) * tint
    rock = float(np.clip((62.0 - a) / 30.0, 0.0, 1.0) * 0.35 + 0.08)
    veg_word = _VEGETATION_WORDS[int(np.searchsorted((18.0, 38.0, 56.0), a))]
    band = _BANDS[int(np.searchsorted((23.5, 35.0, 60.0), a))]
    return _Climate(veg, soil, water, sand, rock, veg_word, band, _HEMISPHERES[int(lat < 0)])


def _sample_location(rng: np.random.Generator, scene: str) -> tuple[float, float]:
    """A (lat, lon) from the class's regional mixture, rounded to 6 decimals."""
    regions = _REGIONS[scene]
    lat0, lon0, spread = regions[int(rng.integers(len(regions)))]
    lat = float(np.clip(lat0 + rng.normal(0.0, spread), -90.0, 90.0))
    lon = float((lon0 + rng.normal(0.0, 1.5 * spread) + 180.0) % 360.0 - 180.0)
    return round(lat, 6), round(lon, 6)


# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------

_Point = tuple[float, float]


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    """A uniformly drawn element (plain Python type, unlike ``rng.choice``)."""
    return items[int(rng.integers(len(items)))]


def _pick_weighted(rng: np.random.Generator, options: Sequence[tuple[str, float]]) -> str:
    """A name drawn with the given relative weights."""
    x = float(rng.random()) * sum(w for _, w in options)
    for name, weight in options:
        x -= weight
        if x < 0.0:
            return name
    return options[-1][0]


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each ``size × size`` float32."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise (about unit variance): a random grid upsampled with smoothstep."""
    cells = max(1, int(cells))
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0.0, cells, size, endpoint=False, dtype=np.float32) + cells / (2 * size)
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3.0 - 2.0 * f)
    rows = grid[i0] * (1.0 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _transform(local: Sequence[_Point], cx: float, cy: float, angle: float) -> list[_Point]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]


def _rect(cx: float, cy: float, length: float, width: float, angle: float) -> list[_Point]:
    hl, hw = length / 2.0, width / 2.0
    return _transform(((-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)), cx, cy, angle)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[_Point]:
    return [(cx - rx, cy - ry), (cx + rx, cy + ry)]


def _ship_outline(length: float, beam: float) -> list[_Point]:
    hl, hb = length / 2.0, beam / 2.0
    bow = min(0.7 * beam, 0.4 * length)
    return [(-hl, -hb), (hl - bow, -hb), (hl, 0.0), (hl - bow, hb), (-hl, hb)]


def _plane_outline(length: float, span: float) -> list[_Point]:
    f = max(0.07 * length, 0.6)
    top = [
        (0.50 * length, 0.0), (0.40 * length, -f), (0.10 * length, -f), (-0.10 * length, -span / 2),
        (-0.22 * length, -span / 2), (-0.10 * length, -f), (-0.36 * length, -f),
        (-0.46 * length, -0.2 * span), (-0.53 * length, -0.2 * span), (-0.50 * length, 0.0),
    ]  # fmt: skip
    bottom = [(x, -y) for x, y in reversed(top[1:-1])]
    return top + bottom


@dataclass
class _Shape:
    """One object to draw: a polygon or ellipse, plus decorations inside it."""

    category: str
    colour: str
    rgb: np.ndarray
    kind: str  # "poly" or "ellipse"
    geom: list[_Point]
    decor: list[tuple[str, list[_Point], float]] = field(default_factory=list)
    stripes: tuple[float, float, float, float, float] | None = None  # x, y, angle, period, amp
    shadow: bool = False


@dataclass
class _Object:
    """A visible, annotated object (after occlusion)."""

    category: str
    colour: str
    mask: np.ndarray
    area: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    cx: float
    cy: float
    cell: str
    size: str | None


def _draw(draw: ImageDraw.ImageDraw, kind: str, geom: list[_Point], value: int) -> None:
    if kind == "ellipse":
        (x0, y0), (x1, y1) = geom
        draw.ellipse((x0, y0, x1, y1), fill=value)
    else:
        draw.polygon(geom, fill=value)


def _cell(cx: float, cy: float, size: int) -> str:
    """The 3×3 grid cell name of a point."""
    col = min(int(3.0 * cx / size), 2)
    row = min(int(3.0 * cy / size), 2)
    return _CELLS[3 * row + col]


class _Canvas:
    """Background, placement book-keeping and the list of shapes of one scene."""

    def __init__(self, rng: np.random.Generator, size: int, climate: _Climate) -> None:
        self.rng = rng
        self.size = size
        self.zoom = float(rng.uniform(0.8, 1.25))
        self.u = size / 64.0 * self.zoom  # pixels per unit of the 64-pixel design canvas
        self.climate = climate
        self.background = np.zeros((size, size, 3), np.float32)
        self.water = np.zeros((size, size), bool)
        self.shapes: list[_Shape] = []
        self.discs: list[tuple[float, float, float]] = []
        self.roads: list[tuple[float, float, float, float, float]] = []  # x0, y0, x1, y1, half w

    # -- colours ---------------------------------------------------------------------------
    def rgb(self, colour: str, jitter: float = 10.0) -> np.ndarray:
        base = np.array(_COLOUR_RGB[colour], dtype=np.float64)
        return base * self.rng.uniform(0.9, 1.1) + self.rng.normal(0.0, jitter, 3)

    def vegetation_rgb(self, darkness: float) -> np.ndarray:
        """A green tinted by the local vegetation palette (for trees and green fields)."""
        base = 0.5 * self.climate.veg + 0.5 * np.array(_COLOUR_RGB["green"])
        return base * darkness * self.rng.uniform(0.88, 1.12) + self.rng.normal(0.0, 6.0, 3)

    # -- backgrounds -----------------------------------------------------------------------
    def mix(self, a: np.ndarray, b: np.ndarray, cells: int, bias: float, sharp: float) -> None:
        """Background blending palettes ``a`` and ``b`` with low-frequency noise."""
        t = 1.0 / (1.0 + np.exp(-sharp * (_smooth(self.rng, self.size, cells) + bias)))
        self.background = a[None, None] * (1.0 - t[..., None]) + b[None, None] * t[..., None]
        self.background = self.background.astype(np.float32)

    def modulate(self, cells: int, amplitude: float) -> None:
        """Multiply the background by ``1 + amplitude * smooth noise`` (texture)."""
        noise = _smooth(self.rng, self.size, cells)
        self.background *= (1.0 + amplitude * noise)[..., None]

    def paint_water(self, water: np.ndarray) -> None:
        """Paint a water region (not an object) and remember it for placement."""
        ripple = 1.0 + 0.06 * _smooth(self.rng, self.size, 6)
        colour = self.climate.water * self.rng.uniform(0.85, 1.15)
        self.background[water] = (colour[None] * ripple[water][:, None]).astype(np.float32)
        self.water |= water

    # -- placement -------------------------------------------------------------------------
    def free(self, x: float, y: float, radius: float) -> bool:
        """True when a disc at (x, y) avoids placed solid objects and roads."""
        for px, py, pr in self.discs:
            if (x - px) ** 2 + (y - py) ** 2 < (0.9 * (radius + pr)) ** 2:
                return False
        for x0, y0, x1, y1, hw in self.roads:
            dx, dy = x1 - x0, y1 - y0
            t = min(max(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0), 1.0)
            if math.hypot(x - x0 - t * dx, y - y0 - t * dy) < hw + 0.7 * radius:
                return False
        return True

    def on(self, x: float, y: float, radius: float, where: str) -> bool:
        """True when the disc centre and four rim points lie on land/water as asked."""
        if where == "any":
            return True
        want_water = where == "water"
        s = self.size
        for dx, dy in ((0, 0), (0.7, 0), (-0.7, 0), (0, 0.7), (0, -0.7)):
            xi = min(max(int(x + dx * radius), 0), s - 1)
            yi = min(max(int(y + dy * radius), 0), s - 1)
            if self.water[yi, xi] != want_water:
                return False
        return True

    def spot(
        self, radius: float, where: str = "land", solid: bool = True, tries: int = 25
    ) -> tuple[float, float] | None:
        """A random free position for an object of this radius, or None."""
        for _ in range(tries):
            x, y = (float(v) for v in self.rng.uniform(0.0, self.size, 2))
            if not self.on(x, y, radius, where) or (solid and not self.free(x, y, radius)):
                continue
            if solid:
                self.discs.append((x, y, radius))
            return x, y
        return None

    def on_road(self) -> tuple[float, float, float] | None:
        """A lane position (x, y, heading) on a random road inside the image, or None."""
        if not self.roads:
            return None
        x0, y0, x1, y1, hw = _pick(self.rng, self.roads)
        heading = math.atan2(y1 - y0, x1 - x0)
        for _ in range(12):
            t = float(self.rng.uniform(0.0, 1.0))
            off = float(self.rng.choice((-0.45, 0.45))) * hw
            x = x0 + t * (x1 - x0) - math.sin(heading) * off
            y = y0 + t * (y1 - y0) + math.cos(heading) * off
            if 1.0 <= x < self.size - 1.0 and 1.0 <= y < self.size - 1.0:
                return x, y, heading + math.pi * float(self.rng.integers(2))
        return None

    # -- objects ---------------------------------------------------------------------------
    def add(self, shape: _Shape) -> None:
        if len(self.shapes) < MAX_OBJECTS:
            self.shapes.append(shape)

    def road(
        self, x: float, y: float, angle: float, width: float, colour: str, *,
        length: float | None = None, runway: bool = False,
    ) -> None:  # fmt: skip
        """A straight road through (x, y); ``length`` None crosses the whole image."""
        length = 3.0 * self.size if length is None else length
        c, s = math.cos(angle), math.sin(angle)
        x0, y0 = x - c * length / 2, y - s * length / 2
        x1, y1 = x + c * length / 2, y + s * length / 2
        rgb = self.rgb(colour, 6.0) if colour != "brown" else self.climate.soil * 0.9
        decor: list[tuple[str, list[_Point], float]] = []
        if runway:  # white dashes along the centre line
            step = 6.0 * self.u
            n = int(length / step)
            for k in range(-n // 2, n // 2 + 1):
                decor.append(
                    (
                        "poly",
                        _rect(
                            x + c * k * step, y + s * k * step, 2.5 * self.u, 0.6 * self.u, angle
                        ),
                        1.8,
                    )
                )
        self.add(_Shape("road", colour, rgb, "poly", _rect(x, y, length, width, angle), decor))
        self.roads.append((x0, y0, x1, y1, width / 2))

    def building(
        self, x: float, y: float, length: float, width: float, angle: float, colour: str,
        gabled: bool,
    ) -> None:  # fmt: skip
        if gabled:  # one half of the roof in shade, split along the long axis
            c, s = math.cos(angle), math.sin(angle)
            shade = _rect(x - s * width / 4, y + c * width / 4, length, width / 2, angle)
            decor = [("poly", shade, 0.78)]
        else:  # flat roof with a lighter inner panel
            decor = [("poly", _rect(x, y, 0.8 * length, 0.7 * width, angle), 1.07)]
        self.add(
            _Shape(
                "building",
                colour,
                self.rgb(colour),
                "poly",
                _rect(x, y, length, width, angle),
                decor,
                shadow=True,
            )
        )

    def tree(self, x: float, y: float, radius: float, darkness: float) -> None:
        rx = radius * float(self.rng.uniform(0.85, 1.15))
        highlight = _ellipse(x - 0.25 * radius, y - 0.25 * radius, 0.45 * radius, 0.45 * radius)
        self.add(
            _Shape(
                "tree",
                "green",
                self.vegetation_rgb(darkness),
                "ellipse",
                _ellipse(x, y, rx, radius),
                [("ellipse", highlight, 1.18)],
                shadow=True,
            )
        )

    def vehicle(self, x: float, y: float, angle: float, colour: str, large: bool = False) -> None:
        length = float(self.rng.uniform(4.5, 6.5) if large else self.rng.uniform(3.0, 4.5)) * self.u
        width = float(self.rng.uniform(2.0, 2.6) if large else self.rng.uniform(1.8, 2.4)) * self.u
        self.add(
            _Shape("vehicle", colour, self.rgb(colour), "poly", _rect(x, y, length, width, angle))
        )

    def ship(
        self, x: float, y: float, length: float, beam: float, angle: float, colour: str
    ) -> None:
        factor = 1.5 if colour in ("black", "blue", "red") else 0.75
        cabin = _transform(_rect(-0.22 * length, 0.0, 0.25 * length, 0.6 * beam, 0.0), x, y, angle)
        self.add(
            _Shape(
                "ship",
                colour,
                self.rgb(colour),
                "poly",
                _transform(_ship_outline(length, beam), x, y, angle),
                [("poly", cabin, factor)],
                shadow=True,
            )
        )

    def tank(self, x: float, y: float, radius: float, colour: str) -> None:
        roof = _ellipse(x, y, 0.72 * radius, 0.72 * radius)
        hub = _ellipse(x, y, 0.2 * radius, 0.2 * radius)
        self.add(
            _Shape(
                "storage tank",
                colour,
                self.rgb(colour),
                "ellipse",
                _ellipse(x, y, radius, radius),
                [("ellipse", roof, 0.86), ("ellipse", hub, 0.7)],
                shadow=True,
            )
        )

    def plane(self, x: float, y: float, length: float, angle: float, colour: str) -> None:
        span = length * float(self.rng.uniform(0.85, 1.1))
        self.add(
            _Shape(
                "plane",
                colour,
                self.rgb(colour, 6.0),
                "poly",
                _transform(_plane_outline(length, span), x, y, angle),
                shadow=True,
            )
        )

    def field(
        self, x: float, y: float, length: float, width: float, angle: float, colour: str
    ) -> None:
        if colour == "green":
            rgb = self.vegetation_rgb(1.1)
        elif colour == "brown":
            rgb = self.climate.soil * 0.85 * self.rng.uniform(0.9, 1.05)
        else:
            rgb = self.rgb(colour) * 0.92 + 0.08 * self.climate.soil
        period = float(self.rng.uniform(1.6, 3.0)) * self.u
        stripes = (x, y, angle + math.pi / 2 * float(self.rng.integers(2)), period, 0.08)
        self.add(
            _Shape("field", colour, rgb, "poly", _rect(x, y, length, width, angle), stripes=stripes)
        )

    # -- rendering -------------------------------------------------------------------------
    def render(self) -> tuple[np.ndarray, list[_Object]]:
        """Rasterise: pixels (uint8 H×W×3) and the visible objects (occlusion applied)."""
        s, rng = self.size, self.rng
        img = self.background.copy()
        shadowed = [sh for sh in self.shapes if sh.shadow]
        if shadowed:  # sun from the top left: shadows fall to the bottom right
            canvas = Image.new("L", (s, s), 0)
            draw = ImageDraw.Draw(canvas)
            d = 0.7 * self.u
            for sh in shadowed:
                _draw(draw, sh.kind, [(px + d, py + d) for px, py in sh.geom], 1)
            img[np.asarray(canvas) > 0] *= 0.62
        owner = np.full((s, s), -1, np.int16)
        yy, xx = _grid(s)
        bounds: dict[int, tuple[int, int, int, int]] = {}
        for i, sh in enumerate(self.shapes):
            # rasterise on a canvas the size of the shape's box, clipped to the image
            points = [p for _, geom, _ in sh.decor for p in geom] + sh.geom
            x0 = max(math.floor(min(p[0] for p in points)) - 1, 0)
            y0 = max(math.floor(min(p[1] for p in points)) - 1, 0)
            x1 = min(math.ceil(max(p[0] for p in points)) + 2, s)
            y1 = min(math.ceil(max(p[1] for p in points)) + 2, s)
            if x0 >= x1 or y0 >= y1:
                continue
            canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
            draw = ImageDraw.Draw(canvas)
            for value, (kind, geom) in enumerate(
                [(sh.kind, sh.geom), *((k, g) for k, g, _ in sh.decor)], start=1
            ):
                _draw(draw, kind, [(px - x0, py - y0) for px, py in geom], value)
            label = np.asarray(canvas)
            inside = label > 0
            if not inside.any():
                continue
            region = img[y0:y1, x0:x1]
            region[inside] = sh.rgb
            for j, (_, _, factor) in enumerate(sh.decor):
                region[label == j + 2] = sh.rgb * factor
            if sh.stripes is not None:
                ox, oy, angle, period, amp = sh.stripes
                v = (xx[y0:y1, x0:x1][inside] - ox) * math.cos(angle)
                v += (yy[y0:y1, x0:x1][inside] - oy) * math.sin(angle)
                region[inside] *= (1.0 + amp * np.sign(np.sin(2 * math.pi * v / period)))[:, None]
            owner[y0:y1, x0:x1][inside] = i
            bounds[i] = (x0, y0, x1, y1)
        img *= float(rng.uniform(0.92, 1.08))
        img += float(rng.uniform(2.0, 7.0)) * rng.standard_normal(img.shape, dtype=np.float32)
        pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)

        min_area = max(3, round(3 * (s / 64.0) ** 2))
        objects = []
        for i, (x0, y0, x1, y1) in bounds.items():
            local = owner[y0:y1, x0:x1] == i
            area = int(local.sum())
            if area < min_area:
                continue
            sh = self.shapes[i]
            mask = np.zeros((s, s), bool)
            mask[y0:y1, x0:x1] = local
            rows, cols = np.flatnonzero(local.any(1)), np.flatnonzero(local.any(0))
            bbox = (x0 + int(cols[0]), y0 + int(rows[0]), int(cols[-1] - cols[0] + 1),
                    int(rows[-1] - rows[0] + 1))  # fmt: skip
            cx = float(xx[y0:y1, x0:x1][local].mean())
            cy = float(yy[y0:y1, x0:x1][local].mean())
            nominal = _NOMINAL_AREA[sh.category]
            size = None
            if nominal is not None:
                nominal *= self.u**2
                small, large = _SIZE_WORDS
                size = small if area < 0.55 * nominal else large if 1.8 * nominal < area else None
            objects.append(
                _Object(sh.category, sh.colour, mask, area, bbox, cx, cy, _cell(cx, cy, s), size)
            )
        return pixels, objects


# ----------------------------------------------------------------------------------------------
# Scene composers: background and class-typical objects
# ----------------------------------------------------------------------------------------------

_BUILDING_COLOURS = (
    ("red", 0.3), ("grey", 0.25), ("white", 0.15), ("brown", 0.15), ("orange", 0.1), ("blue", 0.05),
)  # fmt: skip
_VEHICLE_COLOURS = (
    ("white", 0.3), ("black", 0.2), ("grey", 0.15), ("red", 0.15), ("blue", 0.12), ("yellow", 0.08),
)  # fmt: skip
_ROAD_COLOURS = (("grey", 0.6), ("black", 0.4))


def _count(rng: np.random.Generator, low: int, high: int) -> int:
    """An integer in ``[low, high]``."""
    return int(rng.integers(low, high + 1))


def _trees(cv: _Canvas, n: int, radius: tuple[float, float], darkness: float = 0.8) -> None:
    for _ in range(n):
        r = float(cv.rng.uniform(*radius)) * cv.u
        p = cv.spot(r, solid=False)
        if p is not None:
            cv.tree(p[0], p[1], r, darkness * float(cv.rng.uniform(0.85, 1.1)))


def _vehicles(cv: _Canvas, n: int, on_road: float = 1.0, large: bool = False) -> None:
    for _ in range(n):
        spot = cv.on_road() if cv.rng.random() < on_road else None
        if spot is None:
            p = cv.spot(2.0 * cv.u)
            if p is None:
                continue
            spot = (p[0], p[1], float(cv.rng.uniform(0, math.pi)))
        cv.vehicle(*spot, _pick_weighted(cv.rng, _VEHICLE_COLOURS), large)


def _buildings(
    cv: _Canvas, n: int, length: tuple[float, float], width: tuple[float, float],
    angle: float, colours: Sequence[tuple[str, float]], gabled: bool, where: str = "land",
) -> None:  # fmt: skip
    for _ in range(n):
        a, b = float(cv.rng.uniform(*length)) * cv.u, float(cv.rng.uniform(*width)) * cv.u
        p = cv.spot(0.42 * math.hypot(a, b), where)
        if p is None:
            continue
        turn = math.pi / 2 * float(cv.rng.integers(2)) + float(cv.rng.normal(0.0, 0.05))
        cv.building(p[0], p[1], a, b, angle + turn, _pick_weighted(cv.rng, colours), gabled)


def _residential(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg * 1.08, _PAVED, cells=5, bias=float(r.normal(0.2, 0.4)), sharp=2.0)
    cv.modulate(14, 0.06)
    theta = float(r.uniform(0, math.pi))
    for k in range(_count(r, 1, 3)):
        angle = theta + math.pi / 2 * (k % 2) + float(r.normal(0, 0.03))
        x, y = (float(v) for v in r.uniform(0.15 * s, 0.85 * s, 2))
        cv.road(x, y, angle, float(r.uniform(2.5, 4.0)) * u, _pick_weighted(r, _ROAD_COLOURS))
    _buildings(cv, _count(r, 4, 14), (5, 10), (4, 7), theta, _BUILDING_COLOURS, gabled=True)
    _trees(cv, _count(r, 2, 9), (1.4, 2.8))
    _vehicles(cv, _count(r, 1, 6), on_road=0.85)


def _industrial(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(_CONCRETE, _ASPHALT, cells=3, bias=float(r.normal(-0.8, 0.4)), sharp=3.0)
    cv.modulate(8, 0.05)
    patch = _smooth(r, s, 4) > 1.2  # scraps of vegetation
    cv.background[patch] = (cl.veg * 0.95).astype(np.float32)
    theta = float(r.uniform(0, math.pi))
    for k in range(_count(r, 1, 2)):
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, theta + math.pi / 2 * k, float(r.uniform(3.0, 4.5)) * u, "grey")
    colours = (("grey", 0.4), ("white", 0.35), ("blue", 0.25))
    _buildings(cv, _count(r, 1, 4), (12, 24), (8, 15), theta, colours, gabled=False)
    # a cluster of storage tanks on a grid
    n_tanks = _count(r, 0, 6)
    radius = float(r.uniform(2.5, 5.0)) * u
    cx, cy = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
    colour = _pick(r, ("white", "white", "grey"))
    for k in range(n_tanks):
        x = cx + (k % 3 - 1) * 2.4 * radius
        y = cy + (k // 3 - 0.5) * 2.4 * radius
        if cv.free(x, y, radius):
            cv.discs.append((x, y, radius))
            cv.tank(x, y, radius * float(r.uniform(0.9, 1.1)), colour)
    _vehicles(cv, _count(r, 1, 7), on_road=0.6, large=True)
    _trees(cv, _count(r, 0, 3), (1.4, 2.5))


def _farmland(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.soil, cl.veg, cells=3, bias=-0.5, sharp=2.0)
    cv.modulate(10, 0.05)
    theta = float(r.uniform(0, math.pi))
    cell = float(r.uniform(16.0, 26.0)) * u
    gap = float(r.uniform(1.0, 2.5)) * u
    ax, ay = math.cos(theta), math.sin(theta)
    ox, oy = (float(v) for v in r.uniform(0.3 * s, 0.7 * s, 2))
    colours = (("green", 0.45), ("yellow", 0.3), ("brown", 0.25))
    for i in range(-4, 5):
        for j in range(-4, 5):
            x = ox + i * cell * ax - j * cell * ay
            y = oy + i * cell * ay + j * cell * ax
            if -cell / 3 < x < s + cell / 3 and -cell / 3 < y < s + cell / 3 and r.random() < 0.85:
                length = cell - gap
                width = (cell - gap) * float(r.uniform(0.55, 1.0))
                cv.field(x, y, length, width, theta, _pick_weighted(r, colours))
    if r.random() < 0.6:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, theta + math.pi / 2 * float(r.integers(2)), float(r.uniform(2.0, 3.0)) * u,
                _pick(r, ("brown", "grey")))  # fmt: skip
    colours_b = (("red", 0.4), ("white", 0.3), ("grey", 0.3))
    _buildings(cv, _count(r, 0, 2), (4, 8), (3, 6), theta, colours_b, gabled=True)
    _trees(cv, _count(r, 0, 5), (1.5, 2.8))
    _vehicles(cv, _count(r, 0, 1), on_road=0.5, large=True)


def _forest(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg * 0.62, cl.veg * 0.85, cells=8, bias=0.0, sharp=1.5)
    cv.modulate(20, 0.12)
    if r.random() < 0.3:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, float(r.uniform(0, math.pi)), float(r.uniform(2.0, 3.0)) * u, "brown")
    _trees(cv, _count(r, 14, 40), (2.0, 4.2), darkness=float(r.uniform(0.6, 0.85)))
    _vehicles(cv, int(r.random() < 0.2), on_road=1.0)


def _lake(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg, cl.soil, cells=4, bias=-0.6, sharp=1.5)
    cv.modulate(12, 0.06)
    yy, xx = _grid(s)
    cx, cy = (float(v) for v in r.uniform(0.3 * s, 0.7 * s, 2))
    radius = float(r.uniform(0.28, 0.5)) * s
    blob = 1.0 - np.hypot(xx - cx, yy - cy) / radius + 0.3 * _smooth(r, s, 3)
    cv.paint_water(blob > 0)
    for _ in range(_count(r, 0, 3)):
        length = float(r.uniform(4.0, 8.0)) * u
        p = cv.spot(0.5 * length, "water")
        if p is not None:
            cv.ship(
                p[0],
                p[1],
                length,
                length * float(r.uniform(0.3, 0.42)),
                float(r.uniform(0, 2 * math.pi)),
                _pick(r, ("white", "white", "red", "blue")),
            )
    if r.random() < 0.35:
        cv.road(
            *(float(v) for v in r.uniform(0, s, 2)),
            float(r.uniform(0, math.pi)),
            float(r.uniform(2.0, 3.0)) * u,
            _pick(r, ("brown", "grey")),
            length=0.5 * s,
        )
    _buildings(cv, _count(r, 0, 3), (3.5, 6), (3, 5), float(r.uniform(0, math.pi)),
               (("red", 0.4), ("brown", 0.3), ("white", 0.3)), gabled=True)  # fmt: skip
    _trees(cv, _count(r, 3, 12), (1.5, 3.0))


def _airport(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    grass = 0.65 * cl.veg + 0.35 * cl.soil
    cv.mix(grass * 1.1, grass * 0.9, cells=3, bias=0.0, sharp=1.0)
    cv.modulate(10, 0.04)
    theta = float(r.uniform(0, math.pi))
    c, sn = math.cos(theta), math.sin(theta)
    x, y = (float(v) for v in r.uniform(0.35 * s, 0.65 * s, 2))
    side = float(r.choice((-1.0, 1.0)))
    # apron: a tarmac band along the runway, on one side
    yy, xx = _grid(s)
    across = (-(xx - x) * sn + (yy - y) * c) * side
    apron = (across > 5.0 * u) & (across < float(r.uniform(22.0, 34.0)) * u)
    cv.background[apron] = (_ASPHALT * float(r.uniform(1.05, 1.35))).astype(np.float32)
    cv.road(x, y, theta, float(r.uniform(6.0, 9.0)) * u, "grey", runway=True)
    if r.random() < 0.6:
        off = -side * float(r.uniform(9.0, 14.0)) * u
        cv.road(x - sn * off, y + c * off, theta, float(r.uniform(2.5, 3.5)) * u, "grey")
    for _ in range(_count(r, 1, 5)):
        length = float(r.uniform(9.0, 16.0)) * u
        dist = side * float(r.uniform(8.0, 20.0)) * u
        along = float(r.uniform(-0.45, 0.45)) * s
        px, py = x + c * along - sn * dist, y + sn * along + c * dist
        if 0 <= px < s and 0 <= py < s and cv.free(px, py, 0.45 * length):
            cv.discs.append((px, py, 0.45 * length))
            heading = theta + side * math.pi / 2 + float(r.normal(0.0, 0.3))
            cv.plane(px, py, length, heading, _pick(r, ("white", "white", "grey")))
    _buildings(cv, _count(r, 0, 2), (14, 24), (6, 10), theta, (("grey", 0.5), ("white", 0.5)),
               gabled=False)  # fmt: skip
    _vehicles(cv, _count(r, 0, 4), on_road=0.3)


def _harbour(cv: _Canvas) -> None:
    r, s, u = cv.rng, cv.size, cv.u
    cv.mix(_CONCRETE, _ASPHALT, cells=3, bias=-0.6, sharp=2.0)
    cv.modulate(8, 0.05)
    yy, xx = _grid(s)
    theta = float(r.uniform(0, 2 * math.pi))
    offset = float(r.uniform(-0.15, 0.2)) * s
    coast = (xx - s / 2) * math.cos(theta) + (yy - s / 2) * math.sin(theta)
    coast = coast + 3.0 * u * _smooth(r, s, 3) - offset
    cv.paint_water(coast > 0)
    for _ in range(_count(r, 2, 6)):
        length = float(r.uniform(8.0, 18.0)) * u
        p = cv.spot(0.5 * length, "water")
        if p is not None:
            heading = (
                theta + math.pi / 2 + float(r.normal(0.0, 0.35)) + math.pi * int(r.integers(2))
            )
            cv.ship(p[0], p[1], length, length * float(r.uniform(0.25, 0.35)), heading,
                    _pick(r, ("white", "grey", "red", "blue", "black")))  # fmt: skip
    for _ in range(_count(r, 0, 5)):
        radius = float(r.uniform(2.5, 5.0)) * u
        p = cv.spot(radius)
        if p is not None:
            cv.tank(p[0], p[1], radius, _pick(r, ("white", "white", "grey")))
    _buildings(cv, _count(r, 1, 4), (8, 16), (5, 9), theta,
               (("grey", 0.4), ("blue", 0.2), ("red", 0.2), ("white", 0.2)), gabled=False)  # fmt: skip
    if r.random() < 0.5:
        x, y = s / 2 - math.cos(theta) * 0.3 * s, s / 2 - math.sin(theta) * 0.3 * s
        cv.road(x, y, theta + math.pi / 2, float(r.uniform(2.5, 4.0)) * u, "grey")
    _vehicles(cv, _count(r, 0, 4), on_road=0.5, large=True)


def _desert(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    yy, xx = _grid(s)
    theta = float(r.uniform(0, math.pi))
    period = float(r.uniform(7.0, 14.0)) * u
    phase = (xx * math.cos(theta) + yy * math.sin(theta)) / period + 0.6 * _smooth(r, s, 3)
    dunes = np.sin(2 * math.pi * phase) ** 3
    sand = cl.sand * float(r.uniform(0.92, 1.05))
    cv.background = (sand[None, None] * (1.0 + 0.09 * dunes[..., None])).astype(np.float32)
    cv.modulate(5, 0.05)
    if r.random() < 0.35:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, float(r.uniform(0, math.pi)), float(r.uniform(2.5, 3.5)) * u,
                _pick_weighted(r, _ROAD_COLOURS))  # fmt: skip
    _buildings(cv, _count(r, 0, 2) * int(r.random() < 0.4), (4, 9), (4, 7), theta,
               (("brown", 0.5), ("white", 0.5)), gabled=False)  # fmt: skip
    _vehicles(cv, _count(r, 0, 2) * int(r.random() < 0.5), on_road=0.8)
    _trees(cv, _count(r, 1, 4) * int(r.random() < 0.25), (1.2, 2.0), darkness=0.75)


def _snow(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    snow = np.array((236.0, 240.0, 247.0)) * float(r.uniform(0.9, 1.02))
    rock = np.array((112.0, 108.0, 110.0)) * float(r.uniform(0.8, 1.2))
    bias = -2.2 + 4.0 * cl.rock_fraction
    cv.mix(snow, rock, cells=6, bias=float(bias + r.normal(0.0, 0.3)), sharp=3.0)
    cv.modulate(3, 0.06)
    if r.random() < 0.4:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, float(r.uniform(0, math.pi)), float(r.uniform(2.0, 3.0)) * u,
                _pick_weighted(r, _ROAD_COLOURS))  # fmt: skip
    _buildings(cv, _count(r, 0, 2) * int(r.random() < 0.4), (4, 8), (3, 6),
               float(r.uniform(0, math.pi)), (("red", 0.5), ("brown", 0.5)), gabled=True)  # fmt: skip
    _trees(cv, _count(r, 0, 10) * int(r.random() < 0.6), (1.2, 2.4), darkness=0.55)
    _vehicles(cv, _count(r, 0, 2) * int(r.random() < 0.4), on_road=0.9)


def _river(cv: _Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg, cl.soil, cells=4, bias=float(r.normal(-0.3, 0.4)), sharp=1.5)
    cv.modulate(12, 0.06)
    yy, xx = _grid(s)
    theta = float(r.uniform(0, math.pi))
    c, sn = math.cos(theta), math.sin(theta)
    along = (xx - s / 2) * c + (yy - s / 2) * sn
    across = -(xx - s / 2) * sn + (yy - s / 2) * c
    amplitude = float(r.uniform(0.05, 0.18)) * s
    wavelength = float(r.uniform(0.7, 1.4)) * s
    phase = float(r.uniform(0, 2 * math.pi))
    centre = amplitude * np.sin(2 * math.pi * along / wavelength + phase)
    width = float(r.uniform(6.0, 12.0)) * u
    cv.paint_water(np.abs(across - centre) < width / 2 * (1.0 + 0.15 * _smooth(r, s, 4)))
    colours = (("green", 0.5), ("yellow", 0.25), ("brown", 0.25))
    for _ in range(_count(r, 0, 4)):
        a, b = float(r.uniform(10, 20)) * u, float(r.uniform(7, 14)) * u
        p = cv.spot(0.45 * math.hypot(a, b))
        if p is not None:
            cv.field(p[0], p[1], a, b, theta + float(r.normal(0, 0.2)), _pick_weighted(r, colours))
    if r.random() < 0.4:  # a bridge
        t = float(r.uniform(-0.25, 0.25)) * s
        x, y = s / 2 + c * t, s / 2 + sn * t
        cv.road(x, y, theta + math.pi / 2 + float(r.normal(0, 0.15)), float(r.uniform(2.5, 3.5)) * u,
                _pick_weighted(r, _ROAD_COLOURS))  # fmt: skip
    for _ in range(_count(r, 0, 3)):
        length = float(r.uniform(4.0, 8.0)) * u
        p = cv.spot(0.5 * length, "water")
        if p is not None:
            cv.ship(p[0], p[1], length, min(length * 0.35, 0.6 * width), theta,
                    _pick(r, ("white", "red", "black", "grey")))  # fmt: skip
    _buildings(cv, _count(r, 0, 3), (4, 8), (3, 6), float(r.uniform(0, math.pi)),
               _BUILDING_COLOURS, gabled=True)  # fmt: skip
    _trees(cv, _count(r, 2, 10), (1.4, 3.0))


_COMPOSERS: dict[str, Callable[[_Canvas], None]] = {
    "residential": _residential,
    "industrial": _industrial,
    "farmland": _farmland,
    "forest": _forest,
    "lake": _lake,
    "airport": _airport,
    "harbour": _harbour,
    "desert": _desert,
    "snow": _snow,
    "river": _river,
}


# ----------------------------------------------------------------------------------------------
# Texts from the scene graph
# ----------------------------------------------------------------------------------------------


def _plural(category: str) -> str:
    return category + "s"


def _noun(category: str, n: int) -> str:
    return category if n == 1 else _plural(category)


def _with_article(phrase: str) -> str:
    return f"{_ARTICLES[int(phrase[0] in 'aeiou')]} {phrase}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _join(parts: Sequence[str]) -> str:
    comma, conjunction = _JOINERS
    if len(parts) == 1:
        return parts[0]
    return f"{comma} ".join(parts[:-1]) + f" {conjunction} " + parts[-1]


def _counts_phrase(counts: Counter[str], categories: Sequence[str]) -> str:
    return _join([f"{counts[c]} {_noun(c, counts[c])}" for c in categories])


def _describe(obj: _Object, with_size: bool = True) -> str:
    """Adjectives and noun, e.g. ``large white ship``."""
    words = [obj.size] if with_size and obj.size else []
    return " ".join([*words, obj.colour, obj.category])


def _largest_with_margin(objects: Sequence[_Object], category: str) -> _Object | None:
    """The largest object of a category when it is clearly (1.3×) larger than the others."""
    same = sorted((o for o in objects if o.category == category), key=lambda o: -o.area)
    if len(same) >= 2 and same[0].area >= 1.3 * same[1].area:
        return same[0]
    return None


def _caption(
    rng: np.random.Generator, scene: str, objects: Sequence[_Object], counts: Counter[str]
) -> str:
    np_ = _SCENE_PHRASES[scene]
    scene_a = _with_article(scene)
    present = sorted(counts, key=lambda c: (-counts[c], OBJECT_CATEGORIES.index(c)))
    if not present:
        return _pick(rng, _CAPTIONS_PLAIN).format(np=np_, scene_a=scene_a)
    k = min(len(present), _count(rng, 1, 3))
    chosen = sorted(rng.choice(len(present), size=k, replace=False).tolist())
    counts_text = _counts_phrase(counts, [present[i] for i in chosen])
    roll = rng.random()
    if roll < 0.08:
        return _pick(rng, _CAPTIONS_NO_SCENE).format(counts=counts_text)
    singles = [o for o in objects if counts[o.category] == 1 and o.category not in _NO_POSITION]
    if roll < 0.25 and singles:
        obj = _pick(rng, singles)
        return _pick(rng, _CAPTIONS_OBJECT).format(
            obj_a=_with_article(_describe(obj)), pos=_POSITION_PHRASES[obj.cell], np=np_
        )
    if roll < 0.33:
        return _pick(rng, _CAPTIONS_PLAIN).format(np=np_, scene_a=scene_a)
    return _pick(rng, _CAPTIONS_COUNTS).format(np=np_, scene_a=scene_a, counts=counts_text)


def _description(
    rng: np.random.Generator, scene: str, objects: Sequence[_Object], counts: Counter[str],
    climate: _Climate,
) -> str:  # fmt: skip
    sentences = [_pick(rng, _DESC_OPENERS).format(np=_SCENE_PHRASES[scene])]
    sentences.append(_GROUND_SENTENCES[scene])
    if scene not in ("desert", "snow", "industrial"):
        sentences.append(_pick(rng, _DESC_VEGETATION).format(veg=climate.vegetation_word))
    if counts:
        order = sorted(counts, key=lambda c: (-counts[c], OBJECT_CATEGORIES.index(c)))
        sentences.append(_pick(rng, _DESC_COUNTS).format(counts=_counts_phrase(counts, order)))
    else:
        sentences.append(_pick(rng, _DESC_EMPTY))
    singles = [o for o in objects if counts[o.category] == 1 and o.category not in _NO_POSITION]
    for i in rng.permutation(len(singles))[:2].tolist():
        obj = singles[i]
        sentences.append(_sentence(_pick(rng, _DESC_OBJECT).format(
            obj_a=_with_article(_describe(obj)), pos=_POSITION_PHRASES[obj.cell])))  # fmt: skip
    for category in OBJECT_CATEGORIES:
        largest = _largest_with_margin(objects, category)
        if largest is not None and category not in ("tree", "road"):
            sentences.append(_DESC_LARGEST[0].format(c=category, colour=largest.colour))
            break
    sentences.append(_pick(rng, _DESC_LOCATION).format(band=climate.band, hemi=climate.hemisphere))
    return " ".join(sentences)


def _questions(
    rng: np.random.Generator, scene: str, objects: Sequence[_Object], counts: Counter[str]
) -> list[tuple[str, str, str]]:
    """(question type, question, answer) triples consistent with the annotations."""
    qa: list[tuple[str, str, str]] = [("category", _pick(rng, _Q_SCENE), scene)]
    present = [c for c in OBJECT_CATEGORIES if counts[c] > 0]
    absent = [c for c in OBJECT_CATEGORIES if counts[c] == 0]
    yes, no = _ANSWERS_YES_NO
    for pool, answer in ((present, yes), (absent, no)):
        if pool:
            c = _pick(rng, pool)
            q = _pick(rng, _Q_PRESENCE).format(c_a=_with_article(c), p=_plural(c))
            qa.append(("presence", q, answer))
    pool = present if present and (rng.random() < 0.85 or not absent) else absent
    c = _pick(rng, pool)
    qa.append(("count", _pick(rng, _Q_COUNT).format(p=_plural(c)), str(counts[c])))
    singles = [o for o in objects if counts[o.category] == 1]
    placed = [o for o in singles if o.category not in _NO_POSITION]
    if placed:
        obj = _pick(rng, placed)
        qa.append(("position", _pick(rng, _Q_POSITION).format(c=obj.category), obj.cell))
    referable = [(f"the {o.category}", o) for o in singles]
    for category in present:
        largest = _largest_with_margin(objects, category)
        if largest is not None:
            referable.append((f"the {_SUPERLATIVES['largest'][0]} {category}", largest))
    informative = [(r, o) for r, o in referable if o.category not in ("road", "tree")]
    if informative or referable:
        ref, obj = _pick(rng, informative or referable)
        qa.append(("colour", _pick(rng, _Q_COLOUR).format(ref=ref), obj.colour))
    by_cell = Counter(o.cell for o in objects if o.category not in _NO_POSITION)
    lone = [o for o in objects if o.category not in _NO_POSITION and by_cell[o.cell] == 1]
    if lone:
        obj = _pick(rng, lone)
        q = _pick(rng, _Q_OBJECT).format(pos=_POSITION_PHRASES[obj.cell])
        qa.append(("category", q, obj.category))
    order = rng.permutation(len(qa)).tolist()
    return [qa[i] for i in order]


_ATTRIBUTE_SETS = (
    ("colour",), ("cell",), ("size",), ("colour", "cell"), ("size", "cell"), ("size", "colour"),
)  # fmt: skip


@dataclass
class _Group:
    """The objects of one category in an image, as arrays (for referring expressions)."""

    members: np.ndarray
    area: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    colour: np.ndarray
    cell: np.ndarray


def _groups(objects: Sequence[_Object]) -> dict[str, _Group]:
    members: dict[str, list[int]] = {}
    for i, obj in enumerate(objects):
        members.setdefault(obj.category, []).append(i)
    return {
        c: _Group(
            np.array(ids),
            np.array([objects[i].area for i in ids], dtype=np.float64),
            np.array([objects[i].cx for i in ids]),
            np.array([objects[i].cy for i in ids]),
            np.array([objects[i].colour for i in ids]),
            np.array([objects[i].cell for i in ids]),
        )
        for c, ids in members.items()
    }


def _referring(
    rng: np.random.Generator, objects: Sequence[_Object], index: int,
    groups: dict[str, _Group], fallback: bool = False,
) -> list[str]:  # fmt: skip
    """Up to two expressions that single out ``objects[index]``; empty when none is unique.

    An attribute set (colour, 3×3 cell, size word) refers to the object when every other
    object of its category differs in one of them (size words need a 1.4× area margin);
    superlatives need a 1.3× margin and extremes a 2-pixel gap, unless ``fallback`` (used when
    no object of the image could be referred to otherwise). Relations use anchors whose
    category occurs once in the image.
    """
    obj = objects[index]
    c = obj.category
    group = groups[c]
    keep = group.members != index
    positional = c not in _NO_POSITION
    found: list[str] = []
    if not keep.any():
        found.append(f"the {c}")
        found.append(f"the {obj.colour} {c}")
        if positional:
            found.append(f"the {c} {_POSITION_PHRASES[obj.cell]}")
    else:
        area, cx, cy = group.area[keep], group.cx[keep], group.cy[keep]
        if obj.size == "small":
            size_differs = area >= 1.4 * obj.area
        elif obj.size == "large":
            size_differs = 1.4 * area <= obj.area
        else:
            size_differs = np.zeros(len(area), bool)
        differs = {
            "colour": group.colour[keep] != obj.colour,
            "cell": group.cell[keep] != obj.cell,
            "size": size_differs,
        }
        useful = {a: bool(d.any()) for a, d in differs.items()}  # else the word is redundant
        useful["cell"] &= positional
        for attributes in _ATTRIBUTE_SETS:
            if not all(useful[a] for a in attributes):
                continue
            if np.logical_or.reduce([differs[a] for a in attributes]).all():
                adjectives = [
                    w for a, w in (("size", obj.size), ("colour", obj.colour)) if a in attributes
                ]
                text = " ".join(["the", *(w for w in adjectives if w), c])
                cell = "cell" in attributes
                found.append(f"{text} {_POSITION_PHRASES[obj.cell]}" if cell else text)
        margin, gap = (1.0, 0.0) if fallback else (1.3, 2.0)
        if obj.area >= margin * area.max() and obj.area > area.max():
            found.append(f"the {_pick(rng, _SUPERLATIVES['largest'])} {c}")
        if obj.area * margin <= area.min() and obj.area < area.min():
            found.append(f"the {_SUPERLATIVES['smallest'][0]} {c}")
        extremes = {
            "left": obj.cx + gap < cx.min(),
            "right": obj.cx - gap > cx.max(),
            "top": obj.cy + gap < cy.min(),
            "bottom": obj.cy - gap > cy.max(),
        }
        found.extend(f"the {_EXTREMES[k]} {c}" for k, ok in extremes.items() if ok)
        for other, anchors in groups.items():
            if other == c or len(anchors.members) != 1:
                continue
            anchor = objects[int(anchors.members[0])]
            x0, y0, w, h = anchor.bbox
            tests = {  # (the object is clearly there, some other object is roughly there)
                "left": (obj.cx < x0, cx < anchor.cx),
                "right": (obj.cx > x0 + w, cx > anchor.cx),
                "above": (obj.cy < y0, cy < anchor.cy),
                "below": (obj.cy > y0 + h, cy > anchor.cy),
            }
            for direction, (clearly, roughly) in tests.items():
                if clearly and not roughly.any():
                    found.append(f"the {c} {_RELATIONS[direction]} the {other}")
            d = math.hypot(obj.cx - anchor.cx, obj.cy - anchor.cy)
            if (1.5 * d < np.hypot(cx - anchor.cx, cy - anchor.cy)).all():
                found.append(f"the {c} {_RELATIONS['near']} the {other}")
    unique = list(dict.fromkeys(found))
    order = rng.permutation(len(unique)).tolist()
    return [unique[i] for i in order[:2]]


# ----------------------------------------------------------------------------------------------
# One sample
# ----------------------------------------------------------------------------------------------


@dataclass
class _Sample:
    pixels: np.ndarray
    scene: str
    lat: float
    lon: float
    objects: list[_Object]
    caption: str
    description: str
    qa: list[tuple[str, str, str]]
    refs: list[tuple[int, list[str]]]
    gsd_m: float


@lru_cache(maxsize=64)
def _block_labels(seed: int, split_id: int, block: int) -> tuple[int, ...]:
    """A random permutation of the classes: each block of ``len(SCENE_CLASSES)`` is balanced."""
    rng = np.random.default_rng([_TAG_LABEL, seed, split_id, block])
    return tuple(int(v) for v in rng.permutation(len(SCENE_CLASSES)))


def _make_sample(seed: int, split: str, index: int, image_size: int) -> _Sample:
    """Render one image and its texts; depends only on (seed, split, index, image_size)."""
    split_id = _SPLIT_IDS[split]
    n = len(SCENE_CLASSES)
    scene = SCENE_CLASSES[_block_labels(seed, split_id, index // n)[index % n]]
    rng = np.random.default_rng([_TAG_IMAGE, seed, split_id, index])
    lat, lon = _sample_location(rng, scene)
    climate = _climate(lat, lon)
    canvas = _Canvas(rng, image_size, climate)
    _COMPOSERS[scene](canvas)
    pixels, objects = canvas.render()
    counts = Counter(o.category for o in objects)
    groups = _groups(objects)
    refs = [(i, s) for i in range(len(objects)) if (s := _referring(rng, objects, i, groups))]
    if objects and not refs:
        refs = [
            (i, s) for i in range(len(objects))
            if (s := _referring(rng, objects, i, groups, fallback=True))
        ]  # fmt: skip
    return _Sample(
        pixels=pixels,
        scene=scene,
        lat=lat,
        lon=lon,
        objects=objects,
        caption=_caption(rng, scene, objects, counts),
        description=_description(rng, scene, objects, counts, climate),
        qa=_questions(rng, scene, objects, counts),
        refs=refs,
        gsd_m=round(DESIGN_UNIT_M / canvas.u, 6),
    )


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _validate(num_train: int, num_val: int, num_test: int, image_size: int, seed: int) -> None:
    _check_int("num_train", num_train, 1)
    _check_int("num_val", num_val, 0)
    _check_int("num_test", num_test, 0)
    _check_int("image_size", image_size, 32)
    _check_int("seed", seed, 0)


def _metadata(sizes: dict[str, int], image_size: int, seed: int) -> dict[str, Any]:
    return {
        "name": NAME,
        "version": DATASET_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "splits": {split: int(sizes[split]) for split in SPLITS},
        "scene_classes": list(SCENE_CLASSES),
        "object_categories": list(OBJECT_CATEGORIES),
    }


def _dump_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")


def _write_split(
    directory: Path, split: str, count: int, image_size: int, seed: int, bar: tqdm
) -> None:
    """Write the images and all annotation files of one split."""
    image_dir = directory / "images" / split
    image_dir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, float, float, str]] = []
    conversations: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    for index in range(count):
        sample = _make_sample(seed, split, index, image_size)
        name = f"{split}_{index:05d}"
        rel = f"images/{split}/{name}.png"
        Image.fromarray(sample.pixels).save(directory / rel, format="PNG")
        rows.append((rel, sample.caption, sample.lat, sample.lon, sample.scene))
        image_id = index + 1
        images.append({
            "id": image_id, "file_name": rel, "width": image_size, "height": image_size,
            "lat": sample.lat, "lon": sample.lon, "scene": sample.scene, "gsd_m": sample.gsd_m,
        })  # fmt: skip
        ann_ids = []
        for obj in sample.objects:
            rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            ann_ids.append(len(annotations) + 1)
            annotations.append({
                "id": ann_ids[-1],
                "image_id": image_id,
                "category_id": OBJECT_CATEGORIES.index(obj.category) + 1,
                "bbox": list(obj.bbox),
                "area": obj.area,
                "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
                "iscrowd": 0,
                "colour": obj.colour,
            })  # fmt: skip
        for i, sentences in sample.refs:
            obj = sample.objects[i]
            refs.append({
                "ref_id": len(refs) + 1,
                "ann_id": ann_ids[i],
                "image_id": image_id,
                "category_id": OBJECT_CATEGORIES.index(obj.category) + 1,
                "split": split,
                "sentences": [{"sent": s} for s in sentences],
            })  # fmt: skip
        prompt = f"{_IMAGE_TOKEN}\n"
        conversations.append({
            "id": f"{name}_caption", "image": rel,
            "conversations": [
                {"from": "human", "value": prompt + _PROMPT_CAPTION},
                {"from": "gpt", "value": sample.caption},
            ],
            "task": "caption", "question_types": [],
        })  # fmt: skip
        conversations.append({
            "id": f"{name}_description", "image": rel,
            "conversations": [
                {"from": "human", "value": prompt + _PROMPT_DESCRIPTION},
                {"from": "gpt", "value": sample.description},
            ],
            "task": "description", "question_types": [],
        })  # fmt: skip
        turns = []
        for k, (_, question, answer) in enumerate(sample.qa):
            turns.append({"from": "human", "value": (prompt if k == 0 else "") + question})
            turns.append({"from": "gpt", "value": answer})
        conversations.append({
            "id": f"{name}_vqa", "image": rel, "conversations": turns, "task": "vqa",
            "question_types": [t for t, _, _ in sample.qa],
        })  # fmt: skip
        bar.update(1)
    table = pd.DataFrame(rows, columns=["filepath", "title", "lat", "lon", "label"])
    table.to_csv(directory / f"{split}.csv", index=False, float_format="%.6f", lineterminator="\n")
    _dump_json(directory / f"conversations_{split}.json", conversations)
    categories = [
        {"id": i + 1, "name": c, "supercategory": _SUPERCATEGORIES[c]}
        for i, c in enumerate(OBJECT_CATEGORIES)
    ]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    _dump_json(directory / f"instances_{split}.json", coco)
    _dump_json(directory / f"refs_{split}.json", refs)


def _disk_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def is_complete(
    root: str | Path,
    num_train: int = 2000,
    num_val: int = 250,
    num_test: int = 250,
    image_size: int = 64,
    seed: int = 0,
) -> bool:
    """True when ``root/metadata.json`` exists and matches these parameters and the version."""
    path = Path(root) / "metadata.json"
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    return found == _metadata(sizes, image_size, seed)


def generate(
    root: str | Path,
    num_train: int = 2000,
    num_val: int = 250,
    num_test: int = 250,
    image_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the dataset under ``root``; deterministic for (seed, sizes, image_size).

    The files are written into a temporary sibling folder that is renamed to ``root`` at the
    end, so ``root`` never holds a half-written dataset. A complete dataset with the same
    parameters at ``root`` is kept as is; anything else there is an error.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    _validate(num_train, num_val, num_test, image_size, seed)
    root = Path(root)
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    if is_complete(root, num_train, num_val, num_test, image_size, seed):
        log.info("embedded dataset already complete at %s", root)
        return root
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder made beforehand is fine
    elif root.exists():
        if (root / "metadata.json").is_file():
            reason = (
                "holds an embedded dataset generated with other parameters or another "
                f"generator version (wanted {_metadata(sizes, image_size, seed)})"
            )
        else:
            reason = "exists but holds no complete embedded dataset (no metadata.json)"
        raise FileExistsError(
            f"{root} {reason}. Delete it (or choose another root) and call generate() again."
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f"{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        with tqdm(total=sum(sizes.values()), desc=NAME, unit="img", disable=not progress) as bar:
            for split in SPLITS:
                _write_split(tmp, split, sizes[split], image_size, seed, bar)
        _dump_json(tmp / "metadata.json", _metadata(sizes, image_size, seed))  # last
        try:
            tmp.rename(root)
        except OSError:
            # another process may have finished the same dataset first
            if not is_complete(root, num_train, num_val, num_test, image_size, seed):
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "wrote %s dataset to %s: %d images, %.1f MB",
        NAME, root, sum(sizes.values()), _disk_size(root) / 1e6,
    )  # fmt: skip
    return root
