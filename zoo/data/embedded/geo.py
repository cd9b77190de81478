"""Locations and climate: where a scene of each class lies, and the palettes there.

Locations come from class-dependent regional clusters; vegetation, soil, water and sand
colours (and the climate words of the descriptions) depend on the latitude, with a
hemisphere tint and a small longitude modulation, so that location carries visual signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["BANDS", "HEMISPHERES", "VEGETATION_WORDS", "Climate", "climate", "sample_location"]

HEMISPHERES = ("northern", "southern")
BANDS = ("tropics", "subtropics", "mid latitudes", "high latitudes")
VEGETATION_WORDS = ("lush", "dry", "green", "sparse")

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


@dataclass(frozen=True)
class Climate:
    """Location-dependent palettes (RGB float arrays) and words.

    Attributes:
        veg: vegetation colour.
        soil: bare soil colour.
        water: water colour.
        sand: sand colour.
        rock_fraction: share of rock showing through the snow scenes' background.
        vegetation_word: the vegetation's word in the descriptions.
        band: the latitude band's word.
        hemisphere: the hemisphere's word.
    """

    veg: np.ndarray
    soil: np.ndarray
    water: np.ndarray
    sand: np.ndarray
    rock_fraction: float
    vegetation_word: str
    band: str
    hemisphere: str


def climate(lat: float, lon: float) -> Climate:
    """Palettes by latitude band, with a hemisphere tint and a small longitude modulation.

    Args:
        lat: latitude in degrees.
        lon: longitude in degrees.

    Returns:
        The location's colours and climate words.
    """
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
    veg_word = VEGETATION_WORDS[int(np.searchsorted((18.0, 38.0, 56.0), a))]
    band = BANDS[int(np.searchsorted((23.5, 35.0, 60.0), a))]
    return Climate(veg, soil, water, sand, rock, veg_word, band, HEMISPHERES[int(lat < 0)])


def sample_location(rng: np.random.Generator, scene: str) -> tuple[float, float]:
    """A (lat, lon) from the class's regional mixture, rounded to 6 decimals.

    Args:
        rng: the generator's random state.
        scene: the scene class, which picks the regional mixture.

    Returns:
        ``(lat, lon)`` in degrees.
    """
    regions = _REGIONS[scene]
    lat0, lon0, spread = regions[int(rng.integers(len(regions)))]
    lat = float(np.clip(lat0 + rng.normal(0.0, spread), -90.0, 90.0))
    lon = float((lon0 + rng.normal(0.0, 1.5 * spread) + 180.0) % 360.0 - 180.0)
    return round(lat, 6), round(lon, 6)
