"""RSVQA-LR and RSVQA-HR (Lobry et al.), read from the files of their Zenodo records.

Per split (``LR_split_{split}_*`` for LR, ``USGS_split_{split}_*`` for HR):

* ``..._questions.json``: ``{"questions": [{"id", "img_id", "type", "question",
  "answers_ids": [...], "active", "date_added", "people_id"}]}``;
* ``..._answers.json``: ``{"answers": [{"id", "question_id", "answer", "active", ...}]}``;
* ``..._images.json``: ``{"images": [{"id", "questions_ids", "active", ...}]}``;
* images ``Images_LR/{img_id}.tif`` (256×256 RGB, Sentinel-2) or ``Data/{img_id}.tif``
  (512×512 RGB, USGS aerial orthophotos).

Only ``active`` questions count. A question's answer is the answer whose ``id`` is its first
``answers_ids`` entry (the list index where answers carry no ``id``, as in the authors' loader).
Question types are the files' own: LR ``count``, ``presence``, ``comp`` (comparison),
``rural_urban``; HR ``count``, ``presence``, ``comp``, ``area``. Answers are kept verbatim
(LR counts are numbers such as ``"12"``; HR areas are binned strings such as ``"0m2"`` or
``"between 10m2 and 100m2"``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from torch.nn import functional as F
from torchgeo.datasets import NonGeoDataset

from zoo.data.bands import RGB, BandChoice
from zoo.data.conversations import (
    IMAGE_TOKEN,
    SHORT_ANSWER_PROMPT,
    ConversationCollate,
    ConversationDataset,
)
from zoo.data.datamodules import ZooDataModule
from zoo.data.image_text import caption_words, load_image
from zoo.io import read_json

__all__ = ["QUESTION_TYPES", "RSVQADataModule", "RSVQADataset", "read_rsvqa"]

Variant = Literal["lr", "hr"]
#: Question types in the order of the paper's result tables.
QUESTION_TYPES: dict[str, list[str]] = {
    "lr": ["count", "presence", "comp", "rural_urban"],
    "hr": ["count", "presence", "comp", "area"],
}
PREFIX = {"lr": "LR_split", "hr": "USGS_split"}
IMAGES_DIR = {"lr": "Images_LR", "hr": "Data"}
SPLITS = {"lr": ("train", "val", "test"), "hr": ("train", "val", "test", "test_phili")}
#: Zenodo records (CC BY 4.0) and their image archives.
ZENODO = {
    "lr": ("https://zenodo.org/records/6344334/files", "Images_LR.zip"),
    "hr": ("https://zenodo.org/records/6344367/files", "Images.tar"),
}


def _load(path: Path, key: str) -> list[dict[str, Any]]:
    data = read_json(path, "RSVQA file")
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"{path}: expected an object with a '{key}' list")
    entries = data[key]
    bad = next((n for n, e in enumerate(entries) if not isinstance(e, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: {key}[{bad}] is not an object")
    return entries


def read_rsvqa(root: Path, variant: Variant, split: str) -> list[dict[str, Any]]:
    """The active questions of a split with their answers, in file order.

    Args:
        root: the RSVQA folder.
        variant: ``lr`` (low resolution) or ``hr`` (high resolution): the file prefix.
        split: the split in the file names (e.g. ``train``).

    Returns:
        One ``{"id", "img_id", "type", "question", "answer"}`` dict per active question.

    Raises:
        ValueError: a file is malformed, a question lacks a field, its answer or image is
            missing, or no question is active; errors name the file and the question.
    """
    prefix = root / PREFIX[variant]
    paths = {k: Path(f"{prefix}_{split}_{k}.json") for k in ("questions", "answers", "images")}
    questions = _load(paths["questions"], "questions")
    answers = _load(paths["answers"], "answers")
    images = _load(paths["images"], "images")
    if all("id" in a for a in answers):
        answer_of = {a["id"]: a for a in answers}
    else:
        answer_of = dict(enumerate(answers))
    image_ids = {i.get("id") for i in images}
    out = []
    for n, q in enumerate(questions):
        where = f"{paths['questions']}, questions[{n}] (id {q.get('id', '?')!r})"
        if "active" not in q:
            raise ValueError(f"{where}: needs 'active'")
        if not q["active"]:
            continue
        missing = [k for k in ("id", "img_id", "type", "question", "answers_ids") if k not in q]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        if not isinstance(q["answers_ids"], list) or not q["answers_ids"]:
            raise ValueError(f"{where}: 'answers_ids' must be a non-empty list")
        answer = answer_of.get(q["answers_ids"][0])
        if answer is None or "answer" not in answer:
            raise ValueError(
                f"{where}: its answer {q['answers_ids'][0]!r} is not in {paths['answers']}"
            )
        if q["img_id"] not in image_ids:
            raise ValueError(f"{where}: its image {q['img_id']!r} is not in {paths['images']}")
        out.append(
            {
                "id": str(q["id"]),
                "img_id": str(q["img_id"]),
                "type": str(q["type"]),
                "question": str(q["question"]),
                "answer": str(answer["answer"]),
            }
        )
    if not out:
        raise ValueError(f"{paths['questions']} has no active question")
    return out


class RSVQADataset(NonGeoDataset):
    """RSVQA-LR or RSVQA-HR visual question answering (one sample per active question).

    S. Lobry, D. Marcos, J. Murray and D. Tuia, "RSVQA: Visual Question Answering for Remote
    Sensing Data", IEEE Transactions on Geoscience and Remote Sensing 58(12), 2020.
    LR: 772 Sentinel-2 tiles of the Netherlands, 77k questions; HR: 10,659 USGS aerial tiles
    (15 cm) of the north-east USA, 1,066k questions, with a second test set over Philadelphia
    (``test_phili``). Data: https://zenodo.org/records/6344334 (LR) and
    https://zenodo.org/records/6344367 (HR), licence CC BY 4.0 (as stated on the records).

    A sample holds ``image`` (float ``C×S×S`` in [0, 255]), ``id``, ``question``, ``answer``,
    ``question_type`` and ``image_id``; :attr:`records` are the same questions as LLaVA
    records (task ``vqa``).

    Args:
        root: folder of the JSON files and the image folder.
        variant: ``lr`` or ``hr``.
        split: ``train``, ``val``, ``test`` (and for HR ``test_phili``).
        image_size: images are resized to this square size.
        images_dir: image folder relative to root (default ``Images_LR`` or ``Data``).
        download: download the split's JSON files and the image archive from Zenodo when the
            files are missing.
        transforms: a function applied to each sample dict.
    """

    #: The bands read from each file (the datamodule sets its own, :mod:`zoo.data.bands`).
    band_choice: BandChoice = RGB

    def __init__(
        self,
        root: str | Path = "data/rsvqa_lr",
        variant: Variant = "lr",
        split: str = "train",
        image_size: int = 256,
        images_dir: str | None = None,
        download: bool = False,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if variant not in PREFIX:
            raise ValueError(f"variant must be 'lr' or 'hr', got {variant!r}")
        if split not in SPLITS[variant]:
            raise ValueError(f"split must be one of {SPLITS[variant]} for RSVQA-{variant.upper()}")
        self.root = Path(root)
        self.variant = variant
        self.split = split
        self.images_dir = images_dir if images_dir is not None else IMAGES_DIR[variant]
        if download:
            self._download()
        if not self.root.is_dir():
            url = ZENODO[variant][0].rsplit("/", 1)[0]
            raise FileNotFoundError(
                f"RSVQA-{variant.upper()} root {self.root} does not exist. Download the "
                f"{PREFIX[variant]}_*.json files and {ZENODO[variant][1]} from {url}, unpack "
                f"the images into {self.root / self.images_dir}/, or pass download=True"
            )
        self.questions = read_rsvqa(self.root, variant, split)
        self.image_size = image_size
        self.transforms = transforms

    def _download(self) -> None:
        """Fetch what is missing from Zenodo (never run in the tests)."""
        from torchgeo.datasets.utils import download_url, extract_archive

        base, archive = ZENODO[self.variant]
        names = [
            f"{PREFIX[self.variant]}_{self.split}_{k}.json"
            for k in ("questions", "answers", "images")
        ]
        for name in names:
            if not (self.root / name).is_file():
                download_url(f"{base}/{name}?download=1", self.root, name)
        if not (self.root / self.images_dir).is_dir():
            if not (self.root / archive).is_file():
                download_url(f"{base}/{archive}?download=1", self.root, archive)
            extract_archive(self.root / archive, self.root)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The questions as one-turn LLaVA records (image paths relative to root)."""
        return [
            {
                "id": q["id"],
                "image": f"{self.images_dir}/{q['img_id']}.tif",
                "conversations": [
                    {"from": "human", "value": f"{IMAGE_TOKEN}\n{q['question']}"},
                    {"from": "gpt", "value": q["answer"]},
                ],
                "task": "vqa",
                "question_types": [q["type"]],
            }
            for q in self.questions
        ]

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, index: int) -> dict[str, Any]:
        q = self.questions[index]
        path = self.root / self.images_dir / f"{q['img_id']}.tif"
        image = load_image(
            path,
            f" (question {q['id']} of RSVQA-{self.variant.upper()} {self.split})",
            self.band_choice,
        )
        if image.shape[-1] != self.image_size or image.shape[-2] != self.image_size:
            image = F.interpolate(
                image[None],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
            )[0]
        sample: dict[str, Any] = {
            "image": image,
            "id": q["id"],
            "question": q["question"],
            "answer": q["answer"],
            "question_type": q["type"],
            "image_id": q["img_id"],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class RSVQADataModule(ZooDataModule):
    """RSVQA-LR or RSVQA-HR as one-question conversations for the generators (see
    :class:`RSVQADataset`), built in memory.

    Batches are exactly :class:`~zoo.data.conversations.ConversationCollate`'s, with task
    ``vqa`` and each sample's ``question_type``, so
    :class:`~zoo.metrics.generation.GenerationMetrics` reports accuracy per type when given
    :attr:`question_types` (pass them to the model's ``question_types``). Questions get the
    short-answer instruction (LLaVA-1.5 / GeoChat protocol) when ``short_answer`` is set.

    Args:
        root: folder of the JSON files and the image folder.
        variant: ``lr`` or ``hr``.
        test_split: the split used by test and predict (HR: ``test`` or ``test_phili``).
        images_dir: image folder relative to root (None: ``Images_LR`` or ``Data``).
        short_answer: append "Answer the question using a single word or phrase."
        download: download missing files from Zenodo in ``prepare_data``.
        max_length: conversations are truncated to this many tokens.
        image_size: images are resized to this square size.
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer`` (a generator's comes from its
            ``llm``; None with a tiny LLM builds a word-level tokenizer from the training
            questions and answers), ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    chat_tokenizer = True

    def __init__(
        self,
        root: str = "data/rsvqa_lr",
        variant: Variant = "lr",
        test_split: str = "test",
        images_dir: str | None = None,
        short_answer: bool = True,
        download: bool = False,
        max_length: int = 128,
        image_size: int = 256,
        **kwargs: Any,
    ) -> None:
        if variant not in PREFIX:
            raise ValueError(f"variant must be 'lr' or 'hr', got {variant!r}")
        if test_split not in SPLITS[variant][2:]:
            raise ValueError(f"test_split must be one of {SPLITS[variant][2:]}, got {test_split!r}")
        super().__init__(ConversationDataset, root=root, image_size=image_size, **kwargs)
        self.variant = variant
        self.test_split = test_split
        self.images_dir = images_dir
        self.short_answer = short_answer
        self.download = download
        self.max_length = max_length
        self.class_names: list[str] = []

    @property
    def question_types(self) -> list[str]:
        """The variant's question types, in the paper's order."""
        return list(QUESTION_TYPES[self.variant])

    def _rsvqa(self, split: str, download: bool = False) -> RSVQADataset:
        return RSVQADataset(
            self.dataset_root, self.variant, split, self.image_size, self.images_dir, download
        )

    def prepare_data(self) -> None:
        """Download the splits from Zenodo when ``download`` is set."""
        if self.download:
            for split in ("train", "val", self.test_split):
                self._rsvqa(split, download=True)

    def vocabulary(self) -> list[str]:
        """Words of the training questions and answers and the short-answer prompt.

        Returns:
            The sorted vocabulary.
        """
        questions = self._rsvqa("train").questions
        texts = [q["question"] for q in questions] + [q["answer"] for q in questions]
        return caption_words([*texts, SHORT_ANSWER_PROMPT])

    def _dataset(self, split: str) -> ConversationDataset:
        rsvqa = self._rsvqa(self.test_split if split == "test" else split)
        return ConversationDataset.from_records(
            rsvqa.root,
            rsvqa.records,
            self.image_size,
            source=f"RSVQA-{self.variant.upper()} {rsvqa.split} ({rsvqa.root})",
        )

    def _collate(self) -> ConversationCollate:
        return ConversationCollate(
            self.tokenizer,
            self.max_length,
            short_answer_tasks=("vqa",) if self.short_answer else (),
            conversation=self.conversation,
        )
