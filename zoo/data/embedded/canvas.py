"""The canvas: background, object placement and rasterization with occlusion.

Painters (:mod:`.painters`) fill a :class:`Canvas` with a background and class-typical
shapes (rotated polygons and ellipses); :meth:`Canvas.render` draws them in order (later
objects occlude earlier ones) and returns the pixels and the visible objects with their
masks, boxes and attributes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from zoo.data.embedded.geo import Climate
from zoo.data.embedded.rng import pick
from zoo.data.embedded.scene_graph import (
    COLOUR_RGB,
    MAX_OBJECTS,
    SIZE_WORDS,
    SceneObject,
    cell_of,
)

__all__ = ["DESIGN_UNIT_M", "Canvas", "Point", "Shape", "grid", "smooth"]

DESIGN_UNIT_M = 5.0
"""Nominal ground size of one unit of the 64-unit design canvas: a scene spans ~320 m, so each
image has a ground sample distance (``gsd_m`` in the COCO images)."""

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

Point = tuple[float, float]


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)``, each ``size × size`` float32.

    Args:
        size: the image's side, in pixels.

    Returns:
        ``(y, x)`` coordinate grids.
    """
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise (about unit variance): a random grid upsampled with smoothstep.

    Args:
        rng: the generator's random state.
        size: the output's side, in pixels.
        cells: the number of grid cells along a side (at least 1): the noise's frequency.

    Returns:
        A ``size × size`` float32 noise field.
    """
    cells = max(1, int(cells))
    knots = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0.0, cells, size, endpoint=False, dtype=np.float32) + cells / (2 * size)
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    f = f * f * (3.0 - 2.0 * f)
    rows = knots[i0] * (1.0 - f)[:, None] + knots[i0 + 1] * f[:, None]
    return rows[:, i0] * (1.0 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _transform(local: Sequence[Point], cx: float, cy: float, angle: float) -> list[Point]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]


def _rect(cx: float, cy: float, length: float, width: float, angle: float) -> list[Point]:
    hl, hw = length / 2.0, width / 2.0
    return _transform(((-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)), cx, cy, angle)


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> list[Point]:
    return [(cx - rx, cy - ry), (cx + rx, cy + ry)]


def _ship_outline(length: float, beam: float) -> list[Point]:
    hl, hb = length / 2.0, beam / 2.0
    bow = min(0.7 * beam, 0.4 * length)
    return [(-hl, -hb), (hl - bow, -hb), (hl, 0.0), (hl - bow, hb), (-hl, hb)]


def _plane_outline(length: float, span: float) -> list[Point]:
    f = max(0.07 * length, 0.6)
    top = [
        (0.50 * length, 0.0), (0.40 * length, -f), (0.10 * length, -f), (-0.10 * length, -span / 2),
        (-0.22 * length, -span / 2), (-0.10 * length, -f), (-0.36 * length, -f),
        (-0.46 * length, -0.2 * span), (-0.53 * length, -0.2 * span), (-0.50 * length, 0.0),
    ]  # fmt: skip
    bottom = [(x, -y) for x, y in reversed(top[1:-1])]
    return top + bottom


@dataclass
class Shape:
    """One object to draw: a polygon or ellipse, plus decorations inside it.

    Attributes:
        category: the object category.
        colour: the colour's name (in the texts).
        rgb: the fill colour.
        kind: ``"poly"`` or ``"ellipse"``.
        geom: the polygon's vertices, or the ellipse's bounding box corners.
        decor: decorations drawn inside the shape: ``(kind, geometry, brightness factor)``.
        stripes: optional stripe pattern ``(x, y, angle, period, amp)``.
        shadow: whether the object casts a shadow.
    """

    category: str
    colour: str
    rgb: np.ndarray
    kind: str  # "poly" or "ellipse"
    geom: list[Point]
    decor: list[tuple[str, list[Point], float]] = field(default_factory=list)
    stripes: tuple[float, float, float, float, float] | None = None  # x, y, angle, period, amp
    shadow: bool = False


def _draw(draw: ImageDraw.ImageDraw, kind: str, geom: list[Point], value: int) -> None:
    if kind == "ellipse":
        (x0, y0), (x1, y1) = geom
        draw.ellipse((x0, y0, x1, y1), fill=value)
    else:
        draw.polygon(geom, fill=value)


class Canvas:
    """Background, placement book-keeping and the list of shapes of one scene.

    Args:
        rng: the scene's random state (every draw of the scene comes from it).
        size: the image's side, in pixels.
        climate: the location's palettes.
    """

    def __init__(self, rng: np.random.Generator, size: int, climate: Climate) -> None:
        self.rng = rng
        self.size = size
        self.zoom = float(rng.uniform(0.8, 1.25))
        self.u = size / 64.0 * self.zoom  # pixels per unit of the 64-pixel design canvas
        self.climate = climate
        self.background = np.zeros((size, size, 3), np.float32)
        self.water = np.zeros((size, size), bool)
        self.shapes: list[Shape] = []
        self.discs: list[tuple[float, float, float]] = []
        self.roads: list[tuple[float, float, float, float, float]] = []  # x0, y0, x1, y1, half w

    # -- colours ---------------------------------------------------------------------------
    def rgb(self, colour: str, jitter: float = 10.0) -> np.ndarray:
        """A jittered colour of the named palette colour.

        Args:
            colour: a name in :data:`COLOUR_RGB`.
            jitter: standard deviation of the per-channel noise.

        Returns:
            The RGB colour (float).
        """
        base = np.array(COLOUR_RGB[colour], dtype=np.float64)
        return base * self.rng.uniform(0.9, 1.1) + self.rng.normal(0.0, jitter, 3)

    def vegetation_rgb(self, darkness: float) -> np.ndarray:
        """A green tinted by the local vegetation palette (for trees and green fields).

        Args:
            darkness: brightness factor.

        Returns:
            The RGB colour (float).
        """
        base = 0.5 * self.climate.veg + 0.5 * np.array(COLOUR_RGB["green"])
        return base * darkness * self.rng.uniform(0.88, 1.12) + self.rng.normal(0.0, 6.0, 3)

    # -- backgrounds -----------------------------------------------------------------------
    def mix(self, a: np.ndarray, b: np.ndarray, cells: int, bias: float, sharp: float) -> None:
        """Background blending palettes ``a`` and ``b`` with low-frequency noise.

        Args:
            a: the first RGB colour.
            b: the second RGB colour.
            cells: the noise's grid cells per side.
            bias: shifts the blend towards ``b`` (positive) or ``a`` (negative).
            sharp: steepness of the sigmoid between the two.
        """
        t = 1.0 / (1.0 + np.exp(-sharp * (smooth(self.rng, self.size, cells) + bias)))
        self.background = a[None, None] * (1.0 - t[..., None]) + b[None, None] * t[..., None]
        self.background = self.background.astype(np.float32)

    def modulate(self, cells: int, amplitude: float) -> None:
        """Multiply the background by ``1 + amplitude * smooth noise`` (texture).

        Args:
            cells: the noise's grid cells per side.
            amplitude: the texture's strength.
        """
        noise = smooth(self.rng, self.size, cells)
        self.background *= (1.0 + amplitude * noise)[..., None]

    def paint_water(self, water: np.ndarray) -> None:
        """Paint a water region (not an object) and remember it for placement.

        Args:
            water: bool ``size × size`` mask of the region.
        """
        ripple = 1.0 + 0.06 * smooth(self.rng, self.size, 6)
        colour = self.climate.water * self.rng.uniform(0.85, 1.15)
        self.background[water] = (colour[None] * ripple[water][:, None]).astype(np.float32)
        self.water |= water

    # -- placement -------------------------------------------------------------------------
    def free(self, x: float, y: float, radius: float) -> bool:
        """Whether a disc avoids placed solid objects and roads.

        Args:
            x: the disc centre's column.
            y: the disc centre's row.
            radius: the disc's radius, in pixels.

        Returns:
            True when the disc at (x, y) is free.
        """
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
        """Whether the disc centre and four rim points lie on land/water as asked.

        Args:
            x: the disc centre's column.
            y: the disc centre's row.
            radius: the disc's radius, in pixels.
            where: ``land``, ``water`` or ``any``.

        Returns:
            True when all five points are on the requested ground.
        """
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
        """A random free position for an object of this radius.

        Args:
            radius: the object's radius, in pixels.
            where: ``land``, ``water`` or ``any``.
            solid: the object must avoid other solid objects and roads, and is recorded as one.
            tries: random positions tried.

        Returns:
            ``(x, y)``, or None when no try fits.
        """
        for _ in range(tries):
            x, y = (float(v) for v in self.rng.uniform(0.0, self.size, 2))
            if not self.on(x, y, radius, where) or (solid and not self.free(x, y, radius)):
                continue
            if solid:
                self.discs.append((x, y, radius))
            return x, y
        return None

    def on_road(self) -> tuple[float, float, float] | None:
        """A lane position on a random road inside the image.

        Returns:
            ``(x, y, heading)``, or None without a road or a position inside the image.
        """
        if not self.roads:
            return None
        x0, y0, x1, y1, hw = pick(self.rng, self.roads)
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
    def add(self, shape: Shape) -> None:
        """Add a shape, unless the scene already holds :data:`MAX_OBJECTS`.

        Args:
            shape: the object to draw.
        """
        if len(self.shapes) < MAX_OBJECTS:
            self.shapes.append(shape)

    def road(
        self, x: float, y: float, angle: float, width: float, colour: str, *,
        length: float | None = None, runway: bool = False,
    ) -> None:  # fmt: skip
        """A straight road through (x, y).

        Args:
            x: a point of the centre line (column).
            y: a point of the centre line (row).
            angle: direction, in radians.
            width: width, in pixels.
            colour: a palette colour (``brown``: a dirt road in the soil colour).
            length: length, in pixels; None crosses the whole image.
            runway: draw white dashes along the centre line.
        """
        length = 3.0 * self.size if length is None else length
        c, s = math.cos(angle), math.sin(angle)
        x0, y0 = x - c * length / 2, y - s * length / 2
        x1, y1 = x + c * length / 2, y + s * length / 2
        rgb = self.rgb(colour, 6.0) if colour != "brown" else self.climate.soil * 0.9
        decor: list[tuple[str, list[Point], float]] = []
        if runway:  # white dashes along the centre line
            step = 6.0 * self.u
            n = int(length / step)
            for k in range(-n // 2, n // 2 + 1):
                dash = _rect(x + c * k * step, y + s * k * step, 2.5 * self.u, 0.6 * self.u, angle)
                decor.append(("poly", dash, 1.8))
        self.add(Shape("road", colour, rgb, "poly", _rect(x, y, length, width, angle), decor))
        self.roads.append((x0, y0, x1, y1, width / 2))

    def building(
        self, x: float, y: float, length: float, width: float, angle: float, colour: str,
        gabled: bool,
    ) -> None:  # fmt: skip
        """A rectangular building with a gabled or flat roof.

        Args:
            x: centre column.
            y: centre row.
            length: length, in pixels.
            width: width, in pixels.
            angle: orientation, in radians.
            colour: a palette colour.
            gabled: one half of the roof in shade (else a flat roof with a lighter inner panel).
        """
        if gabled:  # one half of the roof in shade, split along the long axis
            c, s = math.cos(angle), math.sin(angle)
            shade = _rect(x - s * width / 4, y + c * width / 4, length, width / 2, angle)
            decor = [("poly", shade, 0.78)]
        else:  # flat roof with a lighter inner panel
            decor = [("poly", _rect(x, y, 0.8 * length, 0.7 * width, angle), 1.07)]
        outline = _rect(x, y, length, width, angle)
        self.add(Shape("building", colour, self.rgb(colour), "poly", outline, decor, shadow=True))

    def tree(self, x: float, y: float, radius: float, darkness: float) -> None:
        """A tree crown (an ellipse with a highlight) in the local vegetation green.

        Args:
            x: centre column.
            y: centre row.
            radius: crown radius, in pixels.
            darkness: brightness factor of the green.
        """
        rx = radius * float(self.rng.uniform(0.85, 1.15))
        highlight = _ellipse(x - 0.25 * radius, y - 0.25 * radius, 0.45 * radius, 0.45 * radius)
        rgb, outline = self.vegetation_rgb(darkness), _ellipse(x, y, rx, radius)
        decor = [("ellipse", highlight, 1.18)]
        self.add(Shape("tree", "green", rgb, "ellipse", outline, decor, shadow=True))

    def vehicle(self, x: float, y: float, angle: float, colour: str, large: bool = False) -> None:
        """A vehicle (a small rectangle).

        Args:
            x: centre column.
            y: centre row.
            angle: heading, in radians.
            colour: a palette colour.
            large: a truck or bus rather than a car.
        """
        length = float(self.rng.uniform(4.5, 6.5) if large else self.rng.uniform(3.0, 4.5)) * self.u
        width = float(self.rng.uniform(2.0, 2.6) if large else self.rng.uniform(1.8, 2.4)) * self.u
        self.add(
            Shape("vehicle", colour, self.rgb(colour), "poly", _rect(x, y, length, width, angle))
        )

    def ship(
        self, x: float, y: float, length: float, beam: float, angle: float, colour: str
    ) -> None:
        """A ship: a pointed hull with a cabin.

        Args:
            x: centre column.
            y: centre row.
            length: length, in pixels.
            beam: width, in pixels.
            angle: heading, in radians.
            colour: a palette colour.
        """
        factor = 1.5 if colour in ("black", "blue", "red") else 0.75
        cabin = _transform(_rect(-0.22 * length, 0.0, 0.25 * length, 0.6 * beam, 0.0), x, y, angle)
        hull = _transform(_ship_outline(length, beam), x, y, angle)
        decor = [("poly", cabin, factor)]
        self.add(Shape("ship", colour, self.rgb(colour), "poly", hull, decor, shadow=True))

    def tank(self, x: float, y: float, radius: float, colour: str) -> None:
        """A storage tank: a disc with a roof ring and a hub.

        Args:
            x: centre column.
            y: centre row.
            radius: radius, in pixels.
            colour: a palette colour.
        """
        roof = _ellipse(x, y, 0.72 * radius, 0.72 * radius)
        hub = _ellipse(x, y, 0.2 * radius, 0.2 * radius)
        decor = [("ellipse", roof, 0.86), ("ellipse", hub, 0.7)]
        outline = _ellipse(x, y, radius, radius)
        self.add(
            Shape("storage tank", colour, self.rgb(colour), "ellipse", outline, decor, shadow=True)
        )

    def plane(self, x: float, y: float, length: float, angle: float, colour: str) -> None:
        """A plane (fuselage, wings and tail).

        Args:
            x: centre column.
            y: centre row.
            length: length, in pixels.
            angle: heading, in radians.
            colour: a palette colour.
        """
        span = length * float(self.rng.uniform(0.85, 1.1))
        outline = _transform(_plane_outline(length, span), x, y, angle)
        self.add(Shape("plane", colour, self.rgb(colour, 6.0), "poly", outline, shadow=True))

    def field(
        self, x: float, y: float, length: float, width: float, angle: float, colour: str
    ) -> None:
        """A striped rectangular field.

        Args:
            x: centre column.
            y: centre row.
            length: length, in pixels.
            width: width, in pixels.
            angle: orientation, in radians.
            colour: a palette colour (``green`` and ``brown`` follow the local climate).
        """
        if colour == "green":
            rgb = self.vegetation_rgb(1.1)
        elif colour == "brown":
            rgb = self.climate.soil * 0.85 * self.rng.uniform(0.9, 1.05)
        else:
            rgb = self.rgb(colour) * 0.92 + 0.08 * self.climate.soil
        period = float(self.rng.uniform(1.6, 3.0)) * self.u
        stripes = (x, y, angle + math.pi / 2 * float(self.rng.integers(2)), period, 0.08)
        self.add(
            Shape("field", colour, rgb, "poly", _rect(x, y, length, width, angle), stripes=stripes)
        )

    # -- rendering -------------------------------------------------------------------------
    def render(self) -> tuple[np.ndarray, list[SceneObject]]:
        """Rasterize the scene, shadows and occlusion applied.

        Returns:
            The pixels (uint8 ``H×W×3``) and the visible objects.
        """
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
        yy, xx = grid(s)
        bounds: dict[int, tuple[int, int, int, int]] = {}
        for i, sh in enumerate(self.shapes):
            # rasterize on a canvas the size of the shape's box, clipped to the image
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
                small, large = SIZE_WORDS
                size = small if area < 0.55 * nominal else large if 1.8 * nominal < area else None
            cell = cell_of(cx, cy, s)
            objects.append(
                SceneObject(sh.category, sh.colour, mask, area, bbox, cx, cy, cell, size)
            )
        return pixels, objects
