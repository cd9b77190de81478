"""Each writer of the embedded dataset, read back by the reader users point at real data.

The expected values come from the scene graphs and texts of :func:`make_sample`, not from
the files, so each test proves a round trip: what the generator meant is what the reader
returns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("torchgeo")

from zoo.data.coco_refs import ReferringSegmentationDataset  # noqa: E402
from zoo.data.conversations import ConversationDataset  # noqa: E402
from zoo.data.embedded import (  # noqa: E402
    OBJECT_CATEGORIES,
    SCENE_CLASSES,
    Sample,
    generate,
    make_sample,
)
from zoo.data.image_text import ImageTextLocationDataset  # noqa: E402

SIZES = {"num_train": 12, "num_val": 6, "num_test": 0}
SEED = 5
IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(
        tmp_path_factory.mktemp("embedded") / "data", **SIZES, image_size=IMAGE_SIZE, seed=SEED,
        progress=False,
    )  # fmt: skip


def samples(split: str) -> list[Sample]:
    return [make_sample(SEED, split, i, IMAGE_SIZE) for i in range(SIZES[f"num_{split}"])]


def image_tensor(sample: Sample) -> torch.Tensor:
    """The painted pixels as the readers return images: float ``C×H×W`` in [0, 255]."""
    return torch.from_numpy(sample.pixels).permute(2, 0, 1).float()


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight ``x, y, w, h`` box of a mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


@pytest.mark.parametrize("split", ["train", "val"])
def test_caption_table_reads_back_through_the_skyscript_reader(root: Path, split: str) -> None:
    dataset = ImageTextLocationDataset(root, split, class_names=SCENE_CLASSES)
    expected = samples(split)
    assert len(dataset) == len(expected)
    for index, sample in enumerate(expected):
        item = dataset[index]
        assert item["caption"] == sample.texts.caption
        assert item["label"].item() == SCENE_CLASSES.index(sample.graph.scene)
        location = torch.tensor([sample.graph.lat, sample.graph.lon], dtype=torch.float32)
        assert torch.equal(item["location"], location)
        assert torch.equal(item["image"], image_tensor(sample))


def test_empty_split_reads_back_empty(root: Path) -> None:
    assert len(ImageTextLocationDataset(root, "test", class_names=SCENE_CLASSES)) == 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_conversations_read_back_through_the_llava_reader(root: Path, split: str) -> None:
    file = f"conversations_{split}.json"
    dataset = ConversationDataset(root, file, image_size=IMAGE_SIZE)
    expected = samples(split)
    assert len(dataset) == 4 * len(expected)  # caption, description, vqa, location per image
    for index, sample in enumerate(expected):
        caption, description, vqa, where = (dataset[4 * index + k] for k in range(4))
        name = f"{split}_{index:05d}"
        assert [caption["id"], description["id"], vqa["id"], where["id"]] == [
            f"{name}_caption", f"{name}_description", f"{name}_vqa", f"{name}_location"
        ]  # fmt: skip
        assert [caption["task"], description["task"], vqa["task"], where["task"]] == [
            "caption", "description", "vqa", "location"
        ]  # fmt: skip
        turns = where["conversations"]
        located = [t["value"].removeprefix("<image>\n") for t in turns[0::2]]
        assert list(zip(located, [t["value"] for t in turns[1::2]], strict=True)) == [
            (q, a) for _, q, a in sample.texts.location_qa
        ]
        location = torch.tensor([sample.graph.lat, sample.graph.lon], dtype=torch.float32)
        assert all(torch.equal(item["location"], location) for item in (caption, vqa, where))
        assert caption["conversations"][1]["value"] == sample.texts.caption
        assert description["conversations"][1]["value"] == sample.texts.description
        questions = [t["value"] for t in vqa["conversations"][0::2]]
        answers = [t["value"] for t in vqa["conversations"][1::2]]
        assert questions[0].startswith("<image>\n")
        questions[0] = questions[0].removeprefix("<image>\n")
        assert list(zip(questions, answers, strict=True)) == [(q, a) for _, q, a in sample.texts.qa]
        for item in (caption, description, vqa, where):
            assert torch.equal(item["image"], image_tensor(sample))
    single = ConversationDataset(root, file, image_size=IMAGE_SIZE, tasks=["vqa"], single_turn=True)
    assert len(single) == sum(len(s.texts.qa) for s in expected)
    assert [item["question_type"] for item in single] == [
        t for s in expected for t, _, _ in s.texts.qa
    ]


def test_coco_and_refs_read_back_through_the_referring_reader(root: Path) -> None:
    """One sample per (ref, sentence) on ``val``: masks, boxes, categories, locations."""
    dataset = ReferringSegmentationDataset(root, "val", image_size=IMAGE_SIZE, per_ref=True)
    expected = []  # (image index, object index, ref id, sentence index, sentence)
    ref_id = 0
    for index, sample in enumerate(samples("val")):
        for i, sentences in sample.texts.refs:
            ref_id += 1
            expected += [(index, i, ref_id, j, s) for j, s in enumerate(sentences)]
    assert expected and len(dataset) == len(expected)
    graphs = [s.graph for s in samples("val")]
    for item, (index, i, ref, j, sentence) in zip(dataset, expected, strict=True):
        graph = graphs[index]
        obj = graph.objects[i]
        assert item["id"] == f"val_{index:05d}_ref{ref}_s{j}"
        assert item["sentences"] == [sentence]
        mask = item["mask"][0].numpy().astype(bool)
        assert np.array_equal(mask, obj.mask)
        assert int(mask.sum()) == obj.area and box_of(mask) == obj.bbox
        assert item["category"].tolist() == [OBJECT_CATEGORIES.index(obj.category)]
        assert item["geo"] == {"lat": graph.lat, "lon": graph.lon, "gsd_m": graph.gsd_m}


def test_coco_objects_read_back_through_the_referring_reader(root: Path) -> None:
    """Every object of every image, and one sample per image with objects on ``train``."""
    dataset = ReferringSegmentationDataset(root, "train", image_size=IMAGE_SIZE)
    expected = samples("train")
    coco = dataset.coco
    assert sorted(coco.imgs) == list(range(1, len(expected) + 1))
    for image_id, sample in enumerate(expected, start=1):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == len(sample.graph.objects)
        for ann, obj in zip(anns, sample.graph.objects, strict=True):
            assert np.array_equal(coco.annToMask(ann).astype(bool), obj.mask)
            assert (ann["area"], tuple(ann["bbox"])) == (obj.area, obj.bbox)
            assert ann["colour"] == obj.colour
            assert coco.cats[ann["category_id"]]["name"] == obj.category
    with_refs = [s for s in expected if s.texts.refs]
    assert len(dataset) == len(with_refs) == sum(bool(s.graph.objects) for s in expected)
    for item, sample in zip(dataset, with_refs, strict=True):
        referred = {s for _, sentences in sample.texts.refs for s in sentences}
        assert set(item["sentences"]) <= referred
        assert torch.equal(item["image"], image_tensor(sample))
