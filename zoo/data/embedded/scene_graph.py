"""The scene graph: the seam between the painters and the language side.

A painter (:mod:`.painters`) draws an image and returns its :class:`SceneGraph`: the scene
class, the location and climate, and the visible objects with their masks and attributes.
Captions, questions and referring expressions (:mod:`.language`) and the annotation files
(:mod:`.writers`) are built from the graph alone, so they agree with the pixels.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from zoo.data.embedded.geo import Climate

__all__ = [
    "CELLS",
    "COLOUR_RGB",
    "MAX_OBJECTS",
    "OBJECT_CATEGORIES",
    "SCENE_CLASSES",
    "SIZE_WORDS",
    "SceneGraph",
    "SceneObject",
    "cell_of",
]

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

MAX_OBJECTS = 64
"""At most this many objects are drawn in one image, so counts are ``0..MAX_OBJECTS``."""

COLOUR_RGB: dict[str, tuple[float, float, float]] = {
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
"""The colour names an object can have, with the RGB the painters start from."""

CELLS = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
    "bottom right",
)  # fmt: skip
"""Names of the 3×3 grid cells, row by row."""

SIZE_WORDS = ("small", "large")


def cell_of(cx: float, cy: float, size: int) -> str:
    """The 3×3 grid cell name of a point of a ``size × size`` image.

    Args:
        cx: the point's column, in pixels.
        cy: the point's row, in pixels.
        size: the image's side, in pixels.

    Returns:
        One of :data:`CELLS`.
    """
    col = min(int(3.0 * cx / size), 2)
    row = min(int(3.0 * cy / size), 2)
    return CELLS[3 * row + col]


@dataclass
class SceneObject:
    """A visible, annotated object (after occlusion).

    Attributes:
        category: the object category.
        colour: the colour's name.
        mask: ``H×W`` bool, the visible pixels.
        area: number of visible pixels.
        bbox: the visible pixels' box ``(x, y, w, h)``.
        cx: the visible pixels' centre column.
        cy: the visible pixels' centre row.
        cell: the 3×3 grid cell of the centre (:func:`cell_of`).
        size: one of :data:`SIZE_WORDS`, or None when unremarkable.
    """

    category: str
    colour: str
    mask: np.ndarray  # H×W bool, the visible pixels
    area: int
    bbox: tuple[int, int, int, int]  # x, y, w, h
    cx: float
    cy: float
    cell: str
    size: str | None  # one of SIZE_WORDS, or None when unremarkable


@dataclass
class SceneGraph:
    """One scene: class, location, climate and visible objects (later ones drawn on top).

    Attributes:
        scene: the scene class.
        lat: latitude in degrees.
        lon: longitude in degrees.
        climate: the location's palettes and words.
        objects: the visible objects, in drawing order.
        size: the image is ``size × size`` pixels.
        gsd_m: ground sample distance, metres per pixel.
    """

    scene: str
    lat: float
    lon: float
    climate: Climate
    objects: list[SceneObject]
    size: int  # the image is size × size pixels
    gsd_m: float  # ground sample distance, metres per pixel

    @property
    def counts(self) -> Counter[str]:
        """Number of visible objects per category."""
        return Counter(o.category for o in self.objects)
