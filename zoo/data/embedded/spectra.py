"""Extra bands for the embedded dataset's multispectral scenes: near infrared and shortwave
infrared with plausible signatures of the painted materials.

The painters paint visible colour; each pixel's material is read back from it (vegetation:
green above red and blue; water: blue above red and green, and dark; snow and ice: bright and neutral; bare soil,
sand and pavement: the rest), and each material gets the reflectance shape it has in
Sentinel-2 / Landsat bands (Clark's USGS spectral library, in 8-bit units of the visible
bands):

========== ============================== ===============================================
material   NIR (~0.84 µm)                  SWIR (~1.6 µm)
========== ============================== ===============================================
vegetation bright (the red edge: 3-5× red) moderate (leaf water absorbs)
water      dark (near 0)                   darkest
snow, ice  bright (as the visible)         dark (ice absorbs: snow's tell-tale)
soil, sand brighter than red               brightest (dry minerals)
pavement   about the visible mean           about the visible mean
========== ============================== ===============================================

Materials mix by soft scores, so edges and shadows blend; a little noise (the scene's own
random stream, separate from the visible one, which stays byte-identical) keeps the bands from
being a pure function of the colour.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EXTRA_BANDS", "MULTISPECTRAL_BANDS", "extra_bands"]

#: The extra bands, in file order after R, G, B.
EXTRA_BANDS: tuple[str, ...] = ("NIR", "SWIR")
#: A multispectral scene's bands, as the GeoTIFF's band descriptions name them.
MULTISPECTRAL_BANDS: tuple[str, ...] = ("R", "G", "B", *EXTRA_BANDS)


def _scores(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Soft material scores in [0, 1] per pixel of ``H×W×3`` float RGB (0..255)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    bright = rgb.mean(-1) / 255.0
    eps = 1.0
    vegetation = np.clip((g - r) / (g + r + eps) * 6.0, 0.0, 1.0)
    vegetation = vegetation * np.clip((g - b) / (g + b + eps) * 6.0, 0.0, 1.0)
    water = np.clip((b - r) / (b + r + eps) * 4.0, 0.0, 1.0) * np.clip(1.6 - 2.0 * bright, 0, 1)
    water = water * np.clip((b - g + 10.0) / (b + g + eps) * 6.0, 0.0, 1.0)  # blue, not green
    spread = (rgb.max(-1) - rgb.min(-1)) / 255.0
    snow = np.clip((bright - 0.7) * 5.0, 0.0, 1.0) * np.clip(1.0 - 6.0 * spread, 0.0, 1.0)
    soil = np.clip((r - b) / (r + b + eps) * 4.0, 0.0, 1.0) * (1.0 - vegetation)
    return {"vegetation": vegetation, "water": water, "snow": snow, "soil": soil}


def extra_bands(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """NIR and SWIR of a painted scene.

    Args:
        pixels: the visible scene, ``H×W×3`` uint8.
        rng: the scene's random stream for the extra bands (never the painter's).

    Returns:
        ``H×W×2`` uint8: NIR, SWIR.
    """
    rgb = pixels.astype(np.float64)
    red, visible = rgb[..., 0], rgb.mean(-1)
    s = _scores(rgb)
    rest = np.clip(1.0 - s["vegetation"] - s["water"] - s["snow"] - s["soil"], 0.0, 1.0)
    total = s["vegetation"] + s["water"] + s["snow"] + s["soil"] + rest + 1e-6
    nir = (
        s["vegetation"] * np.maximum(4.0 * red, 150.0)
        + s["water"] * 0.15 * visible
        + s["snow"] * 0.95 * visible
        + s["soil"] * 1.25 * red
        + rest * visible
    ) / total
    swir = (
        s["vegetation"] * 0.55 * visible
        + s["water"] * 0.05 * visible
        + s["snow"] * 0.15 * visible
        + s["soil"] * 1.5 * red
        + rest * visible
    ) / total
    noise = rng.normal(0.0, 4.0, (*pixels.shape[:2], 2))
    bands = np.stack([nir, swir], -1) + noise
    return np.clip(np.rint(bands), 0, 255).astype(np.uint8)
