"""The writers: the embedded dataset's files in the formats of the real datasets.

* :class:`CaptionTable`: torchgeo's SkyScript caption table plus location and scene label
  (``filepath,title,lat,lon,label``), read by
  :class:`zoo.data.image_text.ImageTextLocationDataset`.
* :class:`Conversations`: LLaVA conversations (short caption, long description, a multi-turn
  VQA record and a location-question record per image; ``lat``/``lon`` on each record), read
  by :class:`zoo.data.conversations.ConversationDataset`.
* :class:`CocoRefs`: COCO instances (boxes, RLE masks; ``lat``/``lon``/``scene``/``gsd_m`` on
  each image, ``colour`` on each annotation) and RefCOCO / RRSIS-D style referring
  expressions, read by :class:`zoo.data.coco_refs.ReferringSegmentationDataset`.

Each collects the records of one split with ``add`` and writes its file(s) with ``write``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from pycocotools import mask as mask_utils

from zoo.data.embedded.language import SceneTexts
from zoo.data.embedded.scene_graph import OBJECT_CATEGORIES, SceneGraph
from zoo.data.embedded.words import IMAGE_TOKEN, PROMPT_CAPTION, PROMPT_DESCRIPTION

__all__ = ["CaptionTable", "CocoRefs", "Conversations", "write_image", "write_json"]

SUPERCATEGORIES = {
    "building": "structure",
    "road": "transport",
    "tree": "vegetation",
    "vehicle": "vehicle",
    "ship": "vehicle",
    "storage tank": "structure",
    "plane": "vehicle",
    "field": "land",
}


def write_json(path: Path, obj: Any) -> None:
    """Write compact JSON and a final newline.

    Args:
        path: the file to write.
        obj: the JSON-serializable object.
    """
    path.write_text(json.dumps(obj, separators=(",", ":")) + "\n", encoding="utf-8")


def write_image(path: Path, pixels: np.ndarray) -> None:
    """Write an ``H×W×3`` uint8 array as an RGB PNG.

    Args:
        path: the file to write.
        pixels: the image.
    """
    Image.fromarray(pixels).save(path, format="PNG")


def write_geotiff(
    path: Path,
    pixels: np.ndarray,
    names: Sequence[str],
    lat: float,
    lon: float,
    gsd_m: float,
) -> None:
    """Write an ``H×W×C`` uint8 array as a C-band GeoTIFF in EPSG:4326 centred on (lat, lon).

    Args:
        path: the file to write.
        pixels: the bands, last axis in file order.
        names: each band's description (``R``, ``G``, ``B``, ``NIR`` ...).
        lat: the centre's latitude in degrees.
        lon: the centre's longitude in degrees.
        gsd_m: metres per pixel.
    """
    import rasterio
    from rasterio.transform import from_origin

    height, width, count = pixels.shape
    dy = gsd_m / 111_320.0
    dx = dy / max(np.cos(np.radians(lat)), 1e-3)
    transform = from_origin(lon - width / 2 * dx, lat + height / 2 * dy, dx, dy)
    profile = dict(
        driver="GTiff", height=height, width=width, count=count, dtype="uint8",
        crs="EPSG:4326", transform=transform,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
        for i, name in enumerate(names):
            dst.set_band_description(i + 1, name)


class CaptionTable:
    """The SkyScript-style caption table of one split."""

    columns = ("filepath", "title", "lat", "lon", "label")

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, float, str]] = []

    def add(self, filepath: str, graph: SceneGraph, caption: str) -> None:
        """Add the row of one image.

        Args:
            filepath: the image's path relative to the dataset folder.
            graph: the image's scene graph (location and class).
            caption: the image's caption.
        """
        self.rows.append((filepath, caption, graph.lat, graph.lon, graph.scene))

    def write(self, path: Path) -> None:
        """Write the table as CSV.

        Args:
            path: the CSV file.
        """
        table = pd.DataFrame(self.rows, columns=list(self.columns))
        table.to_csv(path, index=False, float_format="%.6f", lineterminator="\n")


def _record(
    ident: str, image: str, turns: list[dict[str, str]], task: str, types: list[str]
) -> dict[str, Any]:
    return {"id": ident, "image": image, "conversations": turns, "task": task,
            "question_types": types}  # fmt: skip


def _qa_turns(qa: list[tuple[str, str, str]], prompt: str) -> list[dict[str, str]]:
    """The turns of ``(type, question, answer)`` triples, the image placeholder in the first."""
    turns = []
    for k, (_, question, answer) in enumerate(qa):
        turns.append({"from": "human", "value": (prompt if k == 0 else "") + question})
        turns.append({"from": "gpt", "value": answer})
    return turns


class Conversations:
    """The LLaVA conversation file of one split: three records per image, and a fourth of
    location questions (task ``location``) where the texts have them."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def add(
        self, name: str, image: str, texts: SceneTexts, location: tuple[float, float] | None = None
    ) -> None:
        """Add the ``{name}_caption``, ``{name}_description``, ``{name}_vqa`` and (with
        location questions) ``{name}_location`` records.

        Args:
            name: the image's name, the records' id prefix.
            image: the image's path relative to the dataset folder.
            texts: the scene's texts.
            location: the scene's ``(lat, lon)`` in degrees, written as ``lat`` and ``lon`` on
                each record (the conversation loaders pass them as the batch's ``location``);
                None writes none.
        """
        first = len(self.records)
        self._add(name, image, texts)
        if texts.location_qa:
            types = [t for t, _, _ in texts.location_qa]
            turns = _qa_turns(texts.location_qa, f"{IMAGE_TOKEN}\n")
            self.records.append(_record(f"{name}_location", image, turns, "location", types))
        if location is not None:
            for record in self.records[first:]:
                record["lat"], record["lon"] = float(location[0]), float(location[1])

    def _add(self, name: str, image: str, texts: SceneTexts) -> None:
        prompt = f"{IMAGE_TOKEN}\n"
        for task, question, answer in (
            ("caption", PROMPT_CAPTION, texts.caption),
            ("description", PROMPT_DESCRIPTION, texts.description),
        ):
            turns = [
                {"from": "human", "value": prompt + question},
                {"from": "gpt", "value": answer},
            ]
            self.records.append(_record(f"{name}_{task}", image, turns, task, []))
        turns = []
        for k, (_, question, answer) in enumerate(texts.qa):
            turns.append({"from": "human", "value": (prompt if k == 0 else "") + question})
            turns.append({"from": "gpt", "value": answer})
        types = [t for t, _, _ in texts.qa]
        self.records.append(_record(f"{name}_vqa", image, turns, "vqa", types))

    def write(self, path: Path) -> None:
        """Write the records as a JSON list.

        Args:
            path: the JSON file.
        """
        write_json(path, self.records)


class CocoRefs:
    """The COCO instances and refs of one split.

    Image ids, annotation ids and ref ids count from 1 in the order of :meth:`add`.

    Args:
        split: the split the refs belong to.
    """

    def __init__(self, split: str) -> None:
        self.split = split
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.refs: list[dict[str, Any]] = []

    def add(self, file_name: str, graph: SceneGraph, refs: list[tuple[int, list[str]]]) -> None:
        """Add one image, its objects (RLE masks) and its refs.

        Args:
            file_name: the image's path relative to the dataset folder.
            graph: the image's scene graph.
            refs: the refs ``(object index, sentences)``.
        """
        image_id = len(self.images) + 1
        self.images.append({
            "id": image_id, "file_name": file_name, "width": graph.size, "height": graph.size,
            "lat": graph.lat, "lon": graph.lon, "scene": graph.scene, "gsd_m": graph.gsd_m,
        })  # fmt: skip
        ann_ids = []
        for obj in graph.objects:
            rle = mask_utils.encode(np.asfortranarray(obj.mask.astype(np.uint8)))
            counts = rle["counts"].decode("ascii")
            ann_ids.append(len(self.annotations) + 1)
            self.annotations.append({
                "id": ann_ids[-1],
                "image_id": image_id,
                "category_id": OBJECT_CATEGORIES.index(obj.category) + 1,
                "bbox": list(obj.bbox),
                "area": obj.area,
                "segmentation": {"size": list(rle["size"]), "counts": counts},
                "iscrowd": 0,
                "colour": obj.colour,
            })  # fmt: skip
        for i, sentences in refs:
            self.refs.append({
                "ref_id": len(self.refs) + 1,
                "ann_id": ann_ids[i],
                "image_id": image_id,
                "category_id": OBJECT_CATEGORIES.index(graph.objects[i].category) + 1,
                "split": self.split,
                "sentences": [{"sent": s} for s in sentences],
            })  # fmt: skip

    def write(self, instances: Path, refs: Path) -> None:
        """Write the COCO instances and the refs as JSON.

        Args:
            instances: the COCO instances file.
            refs: the refs file.
        """
        categories = [
            {"id": i + 1, "name": c, "supercategory": SUPERCATEGORIES[c]}
            for i, c in enumerate(OBJECT_CATEGORIES)
        ]
        coco = {"images": self.images, "annotations": self.annotations, "categories": categories}
        write_json(instances, coco)
        write_json(refs, self.refs)
