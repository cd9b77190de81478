"""The embedded dataset: a deterministic generator of geo-located synthetic remote-sensing scenes.

No real dataset can be downloaded, so the zoo writes its own, on disk and in the formats of
the real data, so that the real loaders read it:

* ``images/{split}/{split}_{index:05d}.png``: RGB uint8 images.
* ``{split}.csv``: torchgeo's SkyScript caption table plus location and scene label
  (columns ``filepath,title,lat,lon,label``).
* ``conversations_{split}.json``: LLaVA conversations (short caption, long description, a
  multi-turn VQA record and a record of location questions per image; ``lat``/``lon`` on each).
* ``instances_{split}.json``: COCO instances (boxes, RLE masks) with ``lat``/``lon``/``scene``
  on each image and ``colour`` on each annotation.
* ``refs_{split}.json``: RefCOCO / RRSIS-D style referring expressions.
* ``metadata.json``: the generation parameters, written last: its presence marks a complete
  dataset.

Each image shows one of :data:`SCENE_CLASSES` with a class-typical mix of
:data:`OBJECT_CATEGORIES`, painted by the class's painter (:data:`PAINTERS`); a location is
drawn per image from class-dependent regional clusters and the palettes depend on it. All
texts are built from the image's :class:`SceneGraph`, so counts, colours and positions in
captions, answers and referring expressions agree with the annotations. Everything is seeded
per ``(seed, split, index)``: an image does not depend on the order of generation nor on the
size of another split.

Modules: :mod:`.scene_graph` (the seam), :mod:`.geo` (locations and climate),
:mod:`.canvas` and :mod:`.painters` (the images), :mod:`.words` and :mod:`.language` (the
texts), :mod:`.writers` (the file formats) and :mod:`.dataset` (the top level).
"""

from __future__ import annotations

from zoo.data.embedded.dataset import (
    DATASET_VERSION,
    NAME,
    SPLITS,
    Sample,
    generate,
    is_complete,
    make_sample,
    write_embedded_dataset,
)
from zoo.data.embedded.painters import PAINTERS
from zoo.data.embedded.scene_graph import (
    MAX_OBJECTS,
    OBJECT_CATEGORIES,
    SCENE_CLASSES,
    SceneGraph,
    SceneObject,
)
from zoo.data.embedded.words import LOCATION_QUESTION_TYPES, QUESTION_TYPES, vocabulary

__all__ = [
    "DATASET_VERSION",
    "LOCATION_QUESTION_TYPES",
    "MAX_OBJECTS",
    "NAME",
    "OBJECT_CATEGORIES",
    "PAINTERS",
    "QUESTION_TYPES",
    "SCENE_CLASSES",
    "SPLITS",
    "Sample",
    "SceneGraph",
    "SceneObject",
    "generate",
    "is_complete",
    "make_sample",
    "vocabulary",
    "write_embedded_dataset",
]
