#!/usr/bin/env python3
"""Write a tiny fake SpaceNet 1 (Rio de Janeiro buildings) in torchgeo's on-disk layout.

``SN1_buildings/train/3band/3band_AOI_1_RIO_img<i>.tif`` (RGB uint8 GeoTIFFs in EPSG:4326, 32x32
px; img3 is 30 rows tall, as real chips vary in size) with
``SN1_buildings/train/geojson/Geo_AOI_1_RIO_img<i>.geojson`` building footprints (CRS84), and two
unlabelled ``SN1_buildings/test/3band`` chips. Every training chip holds one building covering
pixel rows 8-15 and columns 4-19 (bright red in the image), except img1, img5 and img9, which have
none (img5's GeoJSON is an empty file, as some real ones are; the others an empty
FeatureCollection).
Run from anywhere: ``python tests/data/spacenet1/data.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

ROOT = Path(__file__).parent
NUM_TRAIN = 10
PIXEL = (4.489235388119662e-06, -4.486127586210932e-06)  # degrees, as the real chips
ROWS, COLS = slice(8, 16), slice(4, 20)  # the building, in pixels


def transform(i: int) -> Affine:
    """Chips tile a strip of Rio from west to east."""
    return Affine(PIXEL[0], 0.0, -43.7732462563 + 40 * PIXEL[0] * i, 0.0, PIXEL[1], -22.9214851954)


def write_chip(path: Path, i: int, building: bool) -> None:
    height = 30 if i == 3 else 32
    pixels = np.empty((3, height, 32), dtype=np.uint8)
    pixels[0], pixels[1], pixels[2] = 40, 100, 10 * i
    if building:
        pixels[0, ROWS, COLS] = 200
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 3,
        "width": 32,
        "height": height,
        "crs": CRS.from_epsg(4326),
        "transform": transform(i),
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as f:
        f.write(pixels)


def footprint(i: int) -> dict:
    """The building polygon (pixel rows 8-15, columns 4-19) in lon/lat, with z as in SpaceNet."""
    corners = [
        (COLS.start, ROWS.start),
        (COLS.stop, ROWS.start),
        (COLS.stop, ROWS.stop),
        (COLS.start, ROWS.stop),
        (COLS.start, ROWS.start),
    ]
    ring = [[*(transform(i) * corner), 0.0] for corner in corners]
    return {
        "type": "Feature",
        "properties": {"OBJECTID": i},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


shutil.rmtree(ROOT / "SN1_buildings", ignore_errors=True)
train = ROOT / "SN1_buildings" / "train"
(train / "3band").mkdir(parents=True)
(train / "geojson").mkdir()
for i in range(1, NUM_TRAIN + 1):
    building = i not in (1, 5, 9)
    write_chip(train / "3band" / f"3band_AOI_1_RIO_img{i}.tif", i, building)
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
        "features": [footprint(i)] if building else [],
    }
    text = "" if i == 5 else json.dumps(collection)
    (train / "geojson" / f"Geo_AOI_1_RIO_img{i}.geojson").write_text(text)
test = ROOT / "SN1_buildings" / "test"
(test / "3band").mkdir(parents=True)
for i in range(NUM_TRAIN + 1, NUM_TRAIN + 3):
    write_chip(test / "3band" / f"3band_AOI_1_RIO_img{i}.tif", i, building=True)
