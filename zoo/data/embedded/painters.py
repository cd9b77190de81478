"""The scene painters: one per scene class, in the registry :data:`PAINTERS`.

A painter fills a :class:`~.canvas.Canvas` with a class-typical background and mix of
objects; :func:`paint` draws a location, lets the class's painter work and returns the
pixels and the :class:`~.scene_graph.SceneGraph`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from zoo.data.embedded.canvas import DESIGN_UNIT_M, Canvas, grid, smooth
from zoo.data.embedded.geo import climate, sample_location
from zoo.data.embedded.rng import between, pick, pick_weighted
from zoo.data.embedded.scene_graph import SceneGraph

__all__ = ["PAINTERS", "Painter", "paint", "painter"]

Painter = Callable[[Canvas], None]
PAINTERS: dict[str, Painter] = {}
"""Scene class -> its painter, in the order of :data:`~.scene_graph.SCENE_CLASSES`."""


def painter(scene: str) -> Callable[[Painter], Painter]:
    """Register the decorated function as the painter of ``scene``.

    Args:
        scene: the scene class.

    Returns:
        The decorator, which returns the function unchanged.

    Raises:
        ValueError: (when decorating) the scene class already has a painter.
    """

    def register(function: Painter) -> Painter:
        if scene in PAINTERS:
            raise ValueError(f"scene class {scene!r} already has a painter")
        PAINTERS[scene] = function
        return function

    return register


def paint(rng: np.random.Generator, scene: str, image_size: int) -> tuple[np.ndarray, SceneGraph]:
    """Draw a location for ``scene`` and paint it.

    Args:
        rng: the scene's random state.
        scene: the scene class.
        image_size: the image's side, in pixels.

    Returns:
        The pixels (``S×S×3`` uint8) and the scene graph.
    """
    lat, lon = sample_location(rng, scene)
    local = climate(lat, lon)
    canvas = Canvas(rng, image_size, local)
    PAINTERS[scene](canvas)
    pixels, objects = canvas.render()
    gsd_m = round(DESIGN_UNIT_M / canvas.u, 6)
    return pixels, SceneGraph(scene, lat, lon, local, objects, image_size, gsd_m)


_PAVED = np.array((156, 152, 142), dtype=np.float64)
_CONCRETE = np.array((150, 148, 142), dtype=np.float64)
_ASPHALT = np.array((92, 92, 96), dtype=np.float64)

_BUILDING_COLOURS = (
    ("red", 0.3), ("grey", 0.25), ("white", 0.15), ("brown", 0.15), ("orange", 0.1), ("blue", 0.05),
)  # fmt: skip
_VEHICLE_COLOURS = (
    ("white", 0.3), ("black", 0.2), ("grey", 0.15), ("red", 0.15), ("blue", 0.12), ("yellow", 0.08),
)  # fmt: skip
_ROAD_COLOURS = (("grey", 0.6), ("black", 0.4))


def _trees(cv: Canvas, n: int, radius: tuple[float, float], darkness: float = 0.8) -> None:
    for _ in range(n):
        r = float(cv.rng.uniform(*radius)) * cv.u
        p = cv.spot(r, solid=False)
        if p is not None:
            cv.tree(p[0], p[1], r, darkness * float(cv.rng.uniform(0.85, 1.1)))


def _vehicles(cv: Canvas, n: int, on_road: float = 1.0, large: bool = False) -> None:
    for _ in range(n):
        spot = cv.on_road() if cv.rng.random() < on_road else None
        if spot is None:
            p = cv.spot(2.0 * cv.u)
            if p is None:
                continue
            spot = (p[0], p[1], float(cv.rng.uniform(0, math.pi)))
        cv.vehicle(*spot, pick_weighted(cv.rng, _VEHICLE_COLOURS), large)


def _buildings(
    cv: Canvas, n: int, length: tuple[float, float], width: tuple[float, float],
    angle: float, colours: Sequence[tuple[str, float]], gabled: bool, where: str = "land",
) -> None:  # fmt: skip
    for _ in range(n):
        a, b = float(cv.rng.uniform(*length)) * cv.u, float(cv.rng.uniform(*width)) * cv.u
        p = cv.spot(0.42 * math.hypot(a, b), where)
        if p is None:
            continue
        turn = math.pi / 2 * float(cv.rng.integers(2)) + float(cv.rng.normal(0.0, 0.05))
        cv.building(p[0], p[1], a, b, angle + turn, pick_weighted(cv.rng, colours), gabled)


@painter("residential")
def _residential(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg * 1.08, _PAVED, cells=5, bias=float(r.normal(0.2, 0.4)), sharp=2.0)
    cv.modulate(14, 0.06)
    theta = float(r.uniform(0, math.pi))
    for k in range(between(r, 1, 3)):
        angle = theta + math.pi / 2 * (k % 2) + float(r.normal(0, 0.03))
        x, y = (float(v) for v in r.uniform(0.15 * s, 0.85 * s, 2))
        cv.road(x, y, angle, float(r.uniform(2.5, 4.0)) * u, pick_weighted(r, _ROAD_COLOURS))
    _buildings(cv, between(r, 4, 14), (5, 10), (4, 7), theta, _BUILDING_COLOURS, gabled=True)
    _trees(cv, between(r, 2, 9), (1.4, 2.8))
    _vehicles(cv, between(r, 1, 6), on_road=0.85)


@painter("industrial")
def _industrial(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(_CONCRETE, _ASPHALT, cells=3, bias=float(r.normal(-0.8, 0.4)), sharp=3.0)
    cv.modulate(8, 0.05)
    patch = smooth(r, s, 4) > 1.2  # scraps of vegetation
    cv.background[patch] = (cl.veg * 0.95).astype(np.float32)
    theta = float(r.uniform(0, math.pi))
    for k in range(between(r, 1, 2)):
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, theta + math.pi / 2 * k, float(r.uniform(3.0, 4.5)) * u, "grey")
    colours = (("grey", 0.4), ("white", 0.35), ("blue", 0.25))
    _buildings(cv, between(r, 1, 4), (12, 24), (8, 15), theta, colours, gabled=False)
    # a cluster of storage tanks on a grid
    n_tanks = between(r, 0, 6)
    radius = float(r.uniform(2.5, 5.0)) * u
    cx, cy = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
    colour = pick(r, ("white", "white", "grey"))
    for k in range(n_tanks):
        x = cx + (k % 3 - 1) * 2.4 * radius
        y = cy + (k // 3 - 0.5) * 2.4 * radius
        if cv.free(x, y, radius):
            cv.discs.append((x, y, radius))
            cv.tank(x, y, radius * float(r.uniform(0.9, 1.1)), colour)
    _vehicles(cv, between(r, 1, 7), on_road=0.6, large=True)
    _trees(cv, between(r, 0, 3), (1.4, 2.5))


@painter("farmland")
def _farmland(cv: Canvas) -> None:
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
                cv.field(x, y, length, width, theta, pick_weighted(r, colours))
    if r.random() < 0.6:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, theta + math.pi / 2 * float(r.integers(2)), float(r.uniform(2.0, 3.0)) * u,
                pick(r, ("brown", "grey")))  # fmt: skip
    colours_b = (("red", 0.4), ("white", 0.3), ("grey", 0.3))
    _buildings(cv, between(r, 0, 2), (4, 8), (3, 6), theta, colours_b, gabled=True)
    _trees(cv, between(r, 0, 5), (1.5, 2.8))
    _vehicles(cv, between(r, 0, 1), on_road=0.5, large=True)


@painter("forest")
def _forest(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg * 0.62, cl.veg * 0.85, cells=8, bias=0.0, sharp=1.5)
    cv.modulate(20, 0.12)
    if r.random() < 0.3:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, float(r.uniform(0, math.pi)), float(r.uniform(2.0, 3.0)) * u, "brown")
    _trees(cv, between(r, 14, 40), (2.0, 4.2), darkness=float(r.uniform(0.6, 0.85)))
    _vehicles(cv, int(r.random() < 0.2), on_road=1.0)


@painter("lake")
def _lake(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg, cl.soil, cells=4, bias=-0.6, sharp=1.5)
    cv.modulate(12, 0.06)
    yy, xx = grid(s)
    cx, cy = (float(v) for v in r.uniform(0.3 * s, 0.7 * s, 2))
    radius = float(r.uniform(0.28, 0.5)) * s
    blob = 1.0 - np.hypot(xx - cx, yy - cy) / radius + 0.3 * smooth(r, s, 3)
    cv.paint_water(blob > 0)
    for _ in range(between(r, 0, 3)):
        length = float(r.uniform(4.0, 8.0)) * u
        p = cv.spot(0.5 * length, "water")
        if p is not None:
            cv.ship(
                p[0],
                p[1],
                length,
                length * float(r.uniform(0.3, 0.42)),
                float(r.uniform(0, 2 * math.pi)),
                pick(r, ("white", "white", "red", "blue")),
            )
    if r.random() < 0.35:
        cv.road(
            *(float(v) for v in r.uniform(0, s, 2)),
            float(r.uniform(0, math.pi)),
            float(r.uniform(2.0, 3.0)) * u,
            pick(r, ("brown", "grey")),
            length=0.5 * s,
        )
    _buildings(cv, between(r, 0, 3), (3.5, 6), (3, 5), float(r.uniform(0, math.pi)),
               (("red", 0.4), ("brown", 0.3), ("white", 0.3)), gabled=True)  # fmt: skip
    _trees(cv, between(r, 3, 12), (1.5, 3.0))


@painter("airport")
def _airport(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    grass = 0.65 * cl.veg + 0.35 * cl.soil
    cv.mix(grass * 1.1, grass * 0.9, cells=3, bias=0.0, sharp=1.0)
    cv.modulate(10, 0.04)
    theta = float(r.uniform(0, math.pi))
    c, sn = math.cos(theta), math.sin(theta)
    x, y = (float(v) for v in r.uniform(0.35 * s, 0.65 * s, 2))
    side = float(r.choice((-1.0, 1.0)))
    # apron: a tarmac band along the runway, on one side
    yy, xx = grid(s)
    across = (-(xx - x) * sn + (yy - y) * c) * side
    apron = (across > 5.0 * u) & (across < float(r.uniform(22.0, 34.0)) * u)
    cv.background[apron] = (_ASPHALT * float(r.uniform(1.05, 1.35))).astype(np.float32)
    cv.road(x, y, theta, float(r.uniform(6.0, 9.0)) * u, "grey", runway=True)
    if r.random() < 0.6:
        off = -side * float(r.uniform(9.0, 14.0)) * u
        cv.road(x - sn * off, y + c * off, theta, float(r.uniform(2.5, 3.5)) * u, "grey")
    for _ in range(between(r, 1, 5)):
        length = float(r.uniform(9.0, 16.0)) * u
        dist = side * float(r.uniform(8.0, 20.0)) * u
        along = float(r.uniform(-0.45, 0.45)) * s
        px, py = x + c * along - sn * dist, y + sn * along + c * dist
        if 0 <= px < s and 0 <= py < s and cv.free(px, py, 0.45 * length):
            cv.discs.append((px, py, 0.45 * length))
            heading = theta + side * math.pi / 2 + float(r.normal(0.0, 0.3))
            cv.plane(px, py, length, heading, pick(r, ("white", "white", "grey")))
    _buildings(cv, between(r, 0, 2), (14, 24), (6, 10), theta, (("grey", 0.5), ("white", 0.5)),
               gabled=False)  # fmt: skip
    _vehicles(cv, between(r, 0, 4), on_road=0.3)


@painter("harbour")
def _harbour(cv: Canvas) -> None:
    r, s, u = cv.rng, cv.size, cv.u
    cv.mix(_CONCRETE, _ASPHALT, cells=3, bias=-0.6, sharp=2.0)
    cv.modulate(8, 0.05)
    yy, xx = grid(s)
    theta = float(r.uniform(0, 2 * math.pi))
    offset = float(r.uniform(-0.15, 0.2)) * s
    coast = (xx - s / 2) * math.cos(theta) + (yy - s / 2) * math.sin(theta)
    coast = coast + 3.0 * u * smooth(r, s, 3) - offset
    cv.paint_water(coast > 0)
    for _ in range(between(r, 2, 6)):
        length = float(r.uniform(8.0, 18.0)) * u
        p = cv.spot(0.5 * length, "water")
        if p is not None:
            heading = (
                theta + math.pi / 2 + float(r.normal(0.0, 0.35)) + math.pi * int(r.integers(2))
            )
            cv.ship(p[0], p[1], length, length * float(r.uniform(0.25, 0.35)), heading,
                    pick(r, ("white", "grey", "red", "blue", "black")))  # fmt: skip
    for _ in range(between(r, 0, 5)):
        radius = float(r.uniform(2.5, 5.0)) * u
        p = cv.spot(radius)
        if p is not None:
            cv.tank(p[0], p[1], radius, pick(r, ("white", "white", "grey")))
    _buildings(cv, between(r, 1, 4), (8, 16), (5, 9), theta,
               (("grey", 0.4), ("blue", 0.2), ("red", 0.2), ("white", 0.2)), gabled=False)  # fmt: skip
    if r.random() < 0.5:
        x, y = s / 2 - math.cos(theta) * 0.3 * s, s / 2 - math.sin(theta) * 0.3 * s
        cv.road(x, y, theta + math.pi / 2, float(r.uniform(2.5, 4.0)) * u, "grey")
    _vehicles(cv, between(r, 0, 4), on_road=0.5, large=True)


@painter("desert")
def _desert(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    yy, xx = grid(s)
    theta = float(r.uniform(0, math.pi))
    period = float(r.uniform(7.0, 14.0)) * u
    phase = (xx * math.cos(theta) + yy * math.sin(theta)) / period + 0.6 * smooth(r, s, 3)
    dunes = np.sin(2 * math.pi * phase) ** 3
    sand = cl.sand * float(r.uniform(0.92, 1.05))
    cv.background = (sand[None, None] * (1.0 + 0.09 * dunes[..., None])).astype(np.float32)
    cv.modulate(5, 0.05)
    if r.random() < 0.35:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, float(r.uniform(0, math.pi)), float(r.uniform(2.5, 3.5)) * u,
                pick_weighted(r, _ROAD_COLOURS))  # fmt: skip
    _buildings(cv, between(r, 0, 2) * int(r.random() < 0.4), (4, 9), (4, 7), theta,
               (("brown", 0.5), ("white", 0.5)), gabled=False)  # fmt: skip
    _vehicles(cv, between(r, 0, 2) * int(r.random() < 0.5), on_road=0.8)
    _trees(cv, between(r, 1, 4) * int(r.random() < 0.25), (1.2, 2.0), darkness=0.75)


@painter("snow")
def _snow(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    snow = np.array((236.0, 240.0, 247.0)) * float(r.uniform(0.9, 1.02))
    rock = np.array((112.0, 108.0, 110.0)) * float(r.uniform(0.8, 1.2))
    bias = -2.2 + 4.0 * cl.rock_fraction
    cv.mix(snow, rock, cells=6, bias=float(bias + r.normal(0.0, 0.3)), sharp=3.0)
    cv.modulate(3, 0.06)
    if r.random() < 0.4:
        x, y = (float(v) for v in r.uniform(0.2 * s, 0.8 * s, 2))
        cv.road(x, y, float(r.uniform(0, math.pi)), float(r.uniform(2.0, 3.0)) * u,
                pick_weighted(r, _ROAD_COLOURS))  # fmt: skip
    _buildings(cv, between(r, 0, 2) * int(r.random() < 0.4), (4, 8), (3, 6),
               float(r.uniform(0, math.pi)), (("red", 0.5), ("brown", 0.5)), gabled=True)  # fmt: skip
    _trees(cv, between(r, 0, 10) * int(r.random() < 0.6), (1.2, 2.4), darkness=0.55)
    _vehicles(cv, between(r, 0, 2) * int(r.random() < 0.4), on_road=0.9)


@painter("river")
def _river(cv: Canvas) -> None:
    r, s, u, cl = cv.rng, cv.size, cv.u, cv.climate
    cv.mix(cl.veg, cl.soil, cells=4, bias=float(r.normal(-0.3, 0.4)), sharp=1.5)
    cv.modulate(12, 0.06)
    yy, xx = grid(s)
    theta = float(r.uniform(0, math.pi))
    c, sn = math.cos(theta), math.sin(theta)
    along = (xx - s / 2) * c + (yy - s / 2) * sn
    across = -(xx - s / 2) * sn + (yy - s / 2) * c
    amplitude = float(r.uniform(0.05, 0.18)) * s
    wavelength = float(r.uniform(0.7, 1.4)) * s
    phase = float(r.uniform(0, 2 * math.pi))
    centre = amplitude * np.sin(2 * math.pi * along / wavelength + phase)
    width = float(r.uniform(6.0, 12.0)) * u
    cv.paint_water(np.abs(across - centre) < width / 2 * (1.0 + 0.15 * smooth(r, s, 4)))
    colours = (("green", 0.5), ("yellow", 0.25), ("brown", 0.25))
    for _ in range(between(r, 0, 4)):
        a, b = float(r.uniform(10, 20)) * u, float(r.uniform(7, 14)) * u
        p = cv.spot(0.45 * math.hypot(a, b))
        if p is not None:
            cv.field(p[0], p[1], a, b, theta + float(r.normal(0, 0.2)), pick_weighted(r, colours))
    if r.random() < 0.4:  # a bridge
        t = float(r.uniform(-0.25, 0.25)) * s
        x, y = s / 2 + c * t, s / 2 + sn * t
        cv.road(x, y, theta + math.pi / 2 + float(r.normal(0, 0.15)), float(r.uniform(2.5, 3.5)) * u,
                pick_weighted(r, _ROAD_COLOURS))  # fmt: skip
    for _ in range(between(r, 0, 3)):
        length = float(r.uniform(4.0, 8.0)) * u
        p = cv.spot(0.5 * length, "water")
        if p is not None:
            cv.ship(p[0], p[1], length, min(length * 0.35, 0.6 * width), theta,
                    pick(r, ("white", "red", "black", "grey")))  # fmt: skip
    _buildings(cv, between(r, 0, 3), (4, 8), (3, 6), float(r.uniform(0, math.pi)),
               _BUILDING_COLOURS, gabled=True)  # fmt: skip
    _trees(cv, between(r, 2, 10), (1.4, 3.0))
