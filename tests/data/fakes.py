"""The tiny fake datasets under ``tests/data/<name>/``: where they are, the writers their
``data.py`` scripts share, and edited copies of them for the tests.

Each script describes its dataset (names, splits, texts) and calls these writers to lay the files
out. The outputs are committed, so a writer must stay deterministic: the images come from one
``numpy`` generator seeded with 0, drawn in the order the names are given.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DATA = Path(__file__).parent  # one folder per fake dataset
CONFIGS = DATA.parents[1] / "configs" / "data"  # the data configs that read them
DATE_ADDED = 1.5e9


def copy_fake(tmp_path: Path, name: str) -> Path:
    """A copy of the fake dataset ``name`` in ``tmp_path / name``, to damage in a test."""
    return Path(shutil.copytree(DATA / name, tmp_path / name))


def edited_fake(tmp_path: Path, name: str, file: str, edit: Callable[[Any], object]) -> Path:
    """A copy of the fake dataset ``name`` whose JSON ``file`` went through ``edit`` (in place)."""
    root = copy_fake(tmp_path, name)
    data = json.loads((root / file).read_text())
    edit(data)
    (root / file).write_text(json.dumps(data))
    return root


def fake_datamodule(
    config: str, name: str, expect: dict[str, Any] | None = None, **init_args: Any
) -> Any:
    """The datamodule of ``configs/data/<config>`` on the fake dataset ``name``.

    The YAML is parsed as LightningCLI parses its ``data:`` block; its ``root`` must be
    ``data/<name>`` and its other ``init_args`` must hold ``expect``. Then ``root`` points at
    the fake, ``init_args`` replace the config's, and the class is instantiated.
    """
    # here, not at the top: the data.py scripts import this module and need neither
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    cfg = parser.parse_path(CONFIGS / config)
    args = cfg.data.init_args
    expect = {"root": f"data/{name}"} | (expect or {})
    assert {key: args[key] for key in expect} == expect
    args.root = str(DATA / name)
    for key, value in init_args.items():
        args[key] = value
    return parser.instantiate_classes(cfg).data


def fresh_dir(path: Path) -> Path:
    """Delete ``path`` if it exists and make it again, empty."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path


def write_random_images(folder: Path, names: Iterable[str], size: int, **save: Any) -> None:
    """Empty ``folder`` and write one ``size`` x ``size`` random RGB image per name into it.

    The pixels of all images come from one generator seeded with 0, in the order of ``names``;
    ``save`` goes to ``PIL.Image.save`` (e.g. ``quality=75`` for JPEG).
    """
    fresh_dir(folder)
    rng = np.random.default_rng(0)
    for name in names:
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, **save)


def write_karpathy_captions(
    root: Path,
    *,
    json_name: str,
    dataset: str,
    image_dir: str,
    size: int,
    filenames: Sequence[str],
    splits: Sequence[str],
    caption: Callable[[int, int], str],
    captions_per_image: int = 5,
    **save: Any,
) -> None:
    """Write a caption set in the Karpathy format, with its images.

    ``root / json_name`` is ``{"images": [{"sentids", "imgid", "sentences": [{"tokens", "raw",
    "imgid", "sentid"}], "split", "filename"}], "dataset": dataset}``; image ``i`` is
    ``root / image_dir / filenames[i]`` in split ``splits[i]`` and its caption ``k`` is
    ``caption(i, k)``. Sentence ids run over all images.
    """
    if len(filenames) != len(splits):
        raise ValueError(f"{len(filenames)} filenames but {len(splits)} splits")
    write_random_images(root / image_dir, filenames, size, **save)
    images, sentid = [], 0
    for i, (filename, split) in enumerate(zip(filenames, splits, strict=True)):
        sentences = []
        for k in range(captions_per_image):
            raw = caption(i, k)
            sentences.append(
                {"tokens": raw.replace(" .", "").split(), "raw": raw, "imgid": i, "sentid": sentid}
            )
            sentid += 1
        images.append(
            {
                "sentids": [s["sentid"] for s in sentences],
                "imgid": i,
                "sentences": sentences,
                "split": split,
                "filename": filename,
            }
        )
    (root / json_name).write_text(json.dumps({"images": images, "dataset": dataset}))


RsvqaQuestion = tuple[str, str, str]  # (type, question, answer)


def write_rsvqa(
    root: Path,
    *,
    prefix: str,
    image_dir: str,
    size: int,
    image_splits: Sequence[str],
    questions: Sequence[RsvqaQuestion],
    values: Callable[[int], dict[str, Any]],
    image_fields: Callable[[int], dict[str, Any]],
    inactive: Callable[[int], Sequence[RsvqaQuestion]] = lambda i: (),
) -> None:
    """Write an RSVQA set in the layout of its Zenodo record, with its images.

    Image ``i`` is ``root / image_dir / f"{i}.tif"`` in split ``image_splits[i]``; it gets every
    ``(type, question, answer)`` of ``questions``, the texts formatted with ``values(i)``, then the
    entries of ``inactive(i)`` (in no split, and not in the image's ``questions_ids``). Each
    question has one answer with the same id. ``image_fields(i)`` goes into the image's entry
    (e.g. ``original_name``, ``sensor``). Per split ``root / f"{prefix}_split_{split}_{key}.json"``
    for key in questions, answers, images lists every entry, ``active`` only for the split's.
    """
    write_random_images(root / image_dir, (f"{i}.tif" for i in range(len(image_splits))), size)
    images: list[dict[str, Any]] = []
    questions_: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []

    def add(i: int, qtype: str, question: str, answer: str, split: str) -> int:
        q = len(questions_)
        questions_.append(
            {
                "id": q,
                "date_added": DATE_ADDED,
                "img_id": i,
                "people_id": 0,
                "type": qtype,
                "question": question,
                "answers_ids": [q],
                "split": split,
            }
        )
        answers.append(
            {
                "id": q,
                "date_added": DATE_ADDED,
                "question_id": q,
                "people_id": 0,
                "answer": answer,
                "split": split,
            }
        )
        return q

    for i, image_split in enumerate(image_splits):
        formats = values(i)
        ids = [
            add(i, qtype, question.format(**formats), answer.format(**formats), image_split)
            for qtype, question, answer in questions
        ]
        for qtype, question, answer in inactive(i):
            add(i, qtype, question, answer, "none")
        images.append(
            {
                "id": i,
                "date_added": DATE_ADDED,
                "people_id": 0,
                **image_fields(i),
                "questions_ids": ids,
                "split": image_split,
            }
        )

    for split in dict.fromkeys(image_splits):
        for key, entries in (("questions", questions_), ("answers", answers), ("images", images)):
            listed = [
                {k: v for k, v in e.items() if k != "split"} | {"active": e["split"] == split}
                for e in entries
            ]
            (root / f"{prefix}_split_{split}_{key}.json").write_text(json.dumps({key: listed}))


def write_scene_table(
    root: Path,
    folder: str,
    table: str,
    classes: Sequence[str],
    *,
    per_class: int = 4,
    size: int = 8,
    extension: str = "png",
    from_benchmark_root: bool = False,
    labels: Callable[[int, str], dict[str, str]] = lambda c, name: {"label": name},
    classnames: dict[str, Sequence[str]] | None = None,
) -> Path:
    """A scene benchmark in SkyScript's layout under ``root / folder``; returns that folder.

    ``per_class`` uniform ``size`` x ``size`` images per class under ``images/<class>/``, class
    ``c`` colored (60 c, 120, 255 - 60 c); the table ``table`` has ``filepath``, ``title`` and the
    columns ``labels(c, name)`` gives (default ``label``: the class name). ``filepath`` is
    relative to the dataset folder, or with ``from_benchmark_root`` to ``root`` (SkyScript's
    benchmark root, as its loader joins it). ``classnames`` maps class-list files to their lines
    (default ``classnames.txt``: ``classes``).
    """
    out = fresh_dir(root / folder) if (root / folder).exists() else root / folder
    out.mkdir(parents=True, exist_ok=True)
    for file, lines in (classnames or {"classnames.txt": classes}).items():
        (out / file).write_text("".join(f"{line}\n" for line in lines))
    rows = []
    for c, name in enumerate(classes):
        (out / "images" / name).mkdir(parents=True)
        pixels = np.empty((size, size, 3), dtype=np.uint8)
        pixels[...] = (60 * c, 120, 255 - 60 * c)
        for n in range(per_class):
            path = f"images/{name}/{name.replace(' ', '_')}_{n}.{extension}"
            Image.fromarray(pixels).save(
                out / path, **({"quality": 100} if extension == "jpg" else {})
            )
            listed = f"{folder}/{path}" if from_benchmark_root else path
            rows.append(
                {"filepath": listed, "title": f"a satellite image of {name}", **labels(c, name)}
            )
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(str(r[k]) for k in columns) for r in rows]
    (out / table).write_text("\r\n".join(lines) + "\r\n")
    return out
