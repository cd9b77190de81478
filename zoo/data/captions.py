"""Remote-sensing caption benchmarks: RSICD, UCM-Captions, Sydney-Captions and NWPU-Captions.

Two annotation formats, read as they are distributed:

* Karpathy style (RSICD ``dataset_rsicd.json``, UCM-Captions and Sydney-Captions
  ``dataset.json``): ``{"images": [{"filename", "imgid", "split", "sentences": [{"raw",
  "tokens", "imgid", "sentid"}, ...], "sentids"}], "dataset"}``, images in one folder
  (RSICD ``RSICD_images/*.jpg``, UCM and Sydney ``imgs/<imgid + 1>.tif``: the ``filename``
  field is authoritative);
* NWPU-Captions (``dataset_nwpu.json``): ``{"<class>": [{"filename", "split", "raw", "raw_1",
  "raw_2", "raw_3", "raw_4", "imgid", "sentids"}, ...], ...}``, images in
  ``NWPU_images/<class>/<filename>``.

Every image has (usually five) reference captions, kept verbatim (stripped) in file order;
empty caption strings are dropped and an image without any caption is an error.

Two datamodules:

* :class:`CaptionDataModule`: image-text batches (the batch contract's ``caption``, tokenized
  into ``input_ids``/``attention_mask``) for FLAVARS fine-tuning and retrieval evaluation,
  with all ``references`` of each image;
* :class:`CaptionConversationDataModule`: the same images as LLaVA conversations ("Describe
  this image briefly." -> caption) for the generators, scored against the five references.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from torch.nn import functional as F
from torchgeo.datasets import NonGeoDataset

from zoo.data.bands import RGB, BandChoice
from zoo.data.conversations import (
    IMAGE_TOKEN,
    SHORT_ANSWER_PROMPT,
    ConversationCollate,
    ConversationDataset,
)
from zoo.data.datamodules import TextCollate, ZooDataModule
from zoo.data.image_text import caption_words, load_image
from zoo.io import read_json

__all__ = [
    "CAPTION_DATASETS",
    "CaptionCollate",
    "CaptionConversationDataModule",
    "CaptionDataModule",
    "CaptionDataset",
    "ChooseCaption",
    "caption_records",
    "read_caption_annotations",
]

CaptionName = Literal["rsicd", "ucm", "sydney", "nwpu"]
NWPU_CAPTION_KEYS = ("raw", "raw_1", "raw_2", "raw_3", "raw_4")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CaptionSpec:
    """Where a caption benchmark keeps its files (relative to its root) and where to get it.

    Attributes:
        title: the benchmark's name in messages (e.g. ``RSICD``).
        annotation_files: candidate annotation files; the first that exists is read.
        images_dir: the image folder.
        url: where to download the benchmark.
    """

    title: str
    annotation_files: tuple[str, ...]  # candidates, the first that exists is read
    images_dir: str
    url: str


_RSICD_URL = "https://github.com/201528014227051/RSICD_optimal"
CAPTION_DATASETS: dict[str, CaptionSpec] = {
    "rsicd": CaptionSpec(
        "RSICD",
        ("dataset_rsicd.json", "annotations_rsicd/dataset_rsicd.json"),
        "RSICD_images",
        _RSICD_URL,
    ),
    "ucm": CaptionSpec("UCM-Captions", ("dataset.json", "dataset_ucm.json"), "imgs", _RSICD_URL),
    "sydney": CaptionSpec(
        "Sydney-Captions", ("dataset.json", "dataset_sydney.json"), "imgs", _RSICD_URL
    ),
    "nwpu": CaptionSpec(
        "NWPU-Captions",
        ("dataset_nwpu.json",),
        "NWPU_images",
        "https://github.com/HaiyanHuang98/NWPU-Captions",
    ),
}


def _spec(name: str) -> CaptionSpec:
    if name not in CAPTION_DATASETS:
        raise ValueError(f"name must be one of {sorted(CAPTION_DATASETS)}, got {name!r}")
    return CAPTION_DATASETS[name]


def _captions(values: Sequence[Any], where: str) -> list[str]:
    if not all(isinstance(v, str) for v in values):
        raise ValueError(
            f"{where}: captions must be strings, got {[type(v).__name__ for v in values]}"
        )
    captions = [v.strip() for v in values if v.strip()]
    if not captions:
        raise ValueError(f"{where}: the image has no caption")
    return captions


def _karpathy(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(
            f"{path}: a Karpathy-style caption file is an object with an 'images' list "
            "(RSICD, UCM-Captions, Sydney-Captions)"
        )
    items = []
    for n, entry in enumerate(data["images"]):
        where = f"{path}, images[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: an image entry must be an object")
        where += f" (filename {entry.get('filename')!r})"
        missing = [k for k in ("filename", "split", "sentences") if k not in entry]
        if missing or not isinstance(entry["sentences"], list):
            raise ValueError(f"{where}: needs 'filename', 'split' and a 'sentences' list")
        if not all(isinstance(s, dict) and "raw" in s for s in entry["sentences"]):
            raise ValueError(f"{where}: every sentence needs a 'raw' caption")
        items.append(
            {
                "image": str(entry["filename"]),
                "references": _captions([s["raw"] for s in entry["sentences"]], where),
                "image_id": str(entry.get("imgid", entry["filename"])),
                "split": str(entry["split"]),
            }
        )
    return items


def _nwpu(data: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(
            f"{path}: an NWPU-Captions file is an object mapping each class name to a list of "
            "image entries"
        )
    items = []
    for label, entries in data.items():
        for n, entry in enumerate(entries):
            where = f"{path}, class {label!r} entry {n}"
            if not isinstance(entry, dict):
                raise ValueError(f"{where}: an image entry must be an object")
            where += f" (filename {entry.get('filename')!r})"
            if any(k not in entry for k in ("filename", "split", "raw")):
                raise ValueError(
                    f"{where}: needs 'filename', 'split' and 'raw' (+ 'raw_1'..'raw_4')"
                )
            items.append(
                {
                    "image": f"{label}/{entry['filename']}",
                    "references": _captions(
                        [entry[k] for k in NWPU_CAPTION_KEYS if k in entry], where
                    ),
                    "image_id": str(entry.get("imgid", f"{label}/{entry['filename']}")),
                    "split": str(entry["split"]),
                }
            )
    return items


def read_caption_annotations(path: Path, name: CaptionName) -> list[dict[str, Any]]:
    """Read every image of a caption file, whichever of the two formats it has.

    Args:
        path: the annotation file (Karpathy-style JSON, or NWPU-Captions' ``dataset_nwpu.json``).
        name: ``rsicd``, ``ucm``, ``sydney`` or ``nwpu`` (``nwpu`` selects the NWPU format).

    Returns:
        One dict per image: ``{"image"`` (path relative to the image folder), ``"references"``,
        ``"image_id"``, ``"split"}``.

    Raises:
        ValueError: the file does not have the expected structure, or an image has no caption;
            errors name the file and the entry.
    """
    data = read_json(path, "caption file")
    return _nwpu(data, path) if name == "nwpu" else _karpathy(data, path)


class CaptionDataset(NonGeoDataset):
    """Images with all their reference captions, from RSICD, UCM-Captions, Sydney-Captions
    or NWPU-Captions.

    A sample holds ``image`` (float ``C×S×S`` in [0, 255]), ``references`` (the image's
    captions in file order) and ``image_id``.

    Datasets (licences: none stated by the authors, research use; check each source):

    * RSICD: X. Lu, B. Wang, X. Zheng and X. Li, "Exploring Models and Data for Remote Sensing
      Image Caption Generation", IEEE Transactions on Geoscience and Remote Sensing 56(4),
      2018. 10,921 images (224 px JPEG), 5 captions each. https://github.com/201528014227051/RSICD_optimal
    * UCM-Captions and Sydney-Captions: B. Qu, X. Li, D. Tao and X. Lu, "Deep Semantic
      Understanding of High Resolution Remote Sensing Image", International Conference on
      Computer, Information and Telecommunication Systems (CITS), 2016. 2,100 UC Merced images
      (256 px TIFF) and 613 Sydney images (500 px TIFF), 5 captions each; download links in the
      RSICD repository above.
    * NWPU-Captions: Q. Cheng, H. Huang, Y. Xu, Y. Zhou, H. Li and Z. Wang, "NWPU-Captions
      Dataset and MLCA-Net for Remote Sensing Image Captioning", IEEE Transactions on
      Geoscience and Remote Sensing 60, 2022. 31,500 NWPU-RESISC45 images (256 px JPEG) in 45
      class folders, 5 captions each. https://github.com/HaiyanHuang98/NWPU-Captions

    None has a stable direct download URL (Google Drive / Baidu / Mega links), so there is no
    ``download`` option: unpack the archive so that ``root`` holds the annotation file and the
    image folder.

    Args:
        root: the dataset folder (e.g. ``data/rsicd``).
        name: ``rsicd``, ``ucm``, ``sydney`` or ``nwpu``.
        split: ``train``, ``val`` or ``test`` (the splits in the annotation file).
        image_size: images are resized to this square size.
        images_dir: image folder relative to root (default: ``RSICD_images``, ``imgs``,
            ``imgs``, ``NWPU_images``).
        annotation_file: annotation file relative to root (default: ``dataset_rsicd.json`` or
            ``annotations_rsicd/dataset_rsicd.json``; ``dataset.json``; ``dataset.json``;
            ``dataset_nwpu.json``).
        transforms: a function applied to each sample dict.
    """

    #: The bands read from each file (the datamodule sets its own, :mod:`zoo.data.bands`).
    band_choice: BandChoice = RGB

    def __init__(
        self,
        root: str | Path = "data/rsicd",
        name: CaptionName = "rsicd",
        split: str = "train",
        image_size: int = 224,
        images_dir: str | None = None,
        annotation_file: str | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        spec = _spec(name)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.name = name
        self.split = split
        self.images_dir = images_dir if images_dir is not None else spec.images_dir
        candidates = (annotation_file,) if annotation_file is not None else spec.annotation_files
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{spec.title} root {self.root} does not exist. Download {spec.title} (see "
                f"{spec.url}) and unpack it so that {self.root} holds {candidates[0]} and the "
                f"image folder {self.images_dir}/"
            )
        found = [self.root / c for c in candidates if (self.root / c).is_file()]
        if not found:
            raise FileNotFoundError(
                f"no {spec.title} annotation file in {self.root}: looked for {list(candidates)}; "
                f"get it from {spec.url}, or set annotation_file"
            )
        self.annotation_path = found[0]
        everything = read_caption_annotations(self.annotation_path, name)
        self.items = [item for item in everything if item["split"] == split]
        if not self.items:
            raise ValueError(
                f"{self.annotation_path} has no image in split {split!r}; its splits are "
                f"{sorted({item['split'] for item in everything})}"
            )
        self.image_size = image_size
        self.transforms = transforms

    def __len__(self) -> int:
        """Number of images in the split."""
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        path = self.root / self.images_dir / item["image"]
        image = load_image(
            path, f" (image {item['image_id']!r} of {self.annotation_path})", self.band_choice
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
            "references": list(item["references"]),
            "image_id": item["image_id"],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class ChooseCaption:
    """Set ``caption`` to one of the sample's ``references``.

    Drawn at random (torch's RNG, so seeded per worker and per epoch) when ``random``, else the
    first one.

    Args:
        random: draw a random reference (training) instead of taking the first one.
    """

    def __init__(self, random: bool) -> None:
        self.random = random

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Choose the caption of one sample.

        Args:
            sample: a :class:`CaptionDataset` sample with ``references``.

        Returns:
            The same sample with ``caption`` set.
        """
        references = sample["references"]
        k = int(torch.randint(len(references), ())) if self.random else 0
        sample["caption"] = references[k]
        return sample


class CaptionCollate(TextCollate):
    """:class:`TextCollate` plus ``references`` as ``list[list[str]]``.

    default_collate would transpose the lists, and fail on images with fewer captions. Takes the
    constructor arguments of :class:`~zoo.data.datamodules.TextCollate`.
    """

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate samples into a tokenized batch that keeps every image's references.

        Args:
            samples: samples with ``image``, ``caption`` and ``references``.

        Returns:
            :class:`TextCollate`'s batch plus ``references`` (``list[list[str]]``).
        """
        references = [list(s["references"]) for s in samples]
        batch = super().__call__(
            [{k: v for k, v in s.items() if k != "references"} for s in samples]
        )
        batch["references"] = references
        return batch


class _CaptionData(ZooDataModule):
    """What both caption datamodules share: the dataset's name and files, the split datasets
    and the training captions.

    Args:
        dataset_class: the dataset class (torchgeo's bookkeeping).
        root: the dataset folder.
        name: ``rsicd``, ``ucm``, ``sydney`` or ``nwpu``.
        images_dir: image folder relative to root (None: the dataset's own).
        annotation_file: annotation file relative to root (None: the dataset's own).
        **kwargs: the loader, size, tokenizer and normalization arguments of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    def __init__(
        self,
        dataset_class: type,
        root: str,
        name: CaptionName,
        images_dir: str | None = None,
        annotation_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        _spec(name)
        super().__init__(dataset_class, root=root, **kwargs)
        self.name = name
        self.images_dir = images_dir
        self.annotation_file = annotation_file
        #: Caption benchmarks have no scene classes (no zero-shot classification).
        self.class_names: list[str] = []

    def _captions(self, split: str, transforms: Callable | None = None) -> CaptionDataset:
        return CaptionDataset(
            self.dataset_root,
            self.name,
            split,
            self.image_size,
            self.images_dir,  # type: ignore[arg-type]
            self.annotation_file,
            transforms,
        )

    @cached_property
    def training_captions(self) -> list[str]:
        """Every reference caption of the training split."""
        return [c for item in self._captions("train").items for c in item["references"]]


class CaptionDataModule(_CaptionData):
    """RSICD, UCM-Captions, Sydney-Captions or NWPU-Captions as image-text batches, for
    FLAVARS fine-tuning and text-image retrieval evaluation (see :class:`CaptionDataset`).

    Batches: ``image`` (normalized on the device), ``caption``, ``input_ids``,
    ``attention_mask``, ``references`` (``list[list[str]]``, all captions of each image) and
    ``image_id``. Training samples take one of their references at random each time they are
    drawn (each epoch sees every image once with a fresh caption, the usual protocol for these
    small datasets); validation and test samples take the first reference.

    Args:
        root: the dataset folder.
        name: ``rsicd``, ``ucm``, ``sydney`` or ``nwpu``.
        max_text_length: captions are truncated to this many tokens.
        batch_size: samples per batch and device.
        **kwargs: ``num_workers``, ``image_size``, ``tokenizer`` (the text encoder's own; None
            builds a word-level vocabulary from the training captions), ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`; ``images_dir``,
            ``annotation_file`` of :class:`_CaptionData`.
    """

    def __init__(
        self,
        root: str = "data/rsicd",
        name: CaptionName = "rsicd",
        max_text_length: int = 64,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(CaptionDataset, root, name, batch_size=batch_size, **kwargs)
        self.max_text_length = max_text_length

    def vocabulary(self) -> list[str]:
        """Words of the training captions, for the word-level tokenizer.

        Returns:
            The sorted vocabulary.
        """
        return caption_words(self.training_captions)

    def _dataset(self, split: str) -> CaptionDataset:
        return self._captions(split, ChooseCaption(random=split == "train"))

    def _collate(self) -> CaptionCollate:
        return CaptionCollate(self.tokenizer, self.max_text_length)


def caption_records(dataset: CaptionDataset, question: str, train: bool) -> list[dict[str, Any]]:
    """LLaVA records of a caption dataset, task ``caption``.

    For training one record per (image, caption); for evaluation one per image, answered by its
    first caption, with all captions as ``references``.

    Args:
        dataset: the caption dataset whose items are converted.
        question: the instruction asked for every image.
        train: one record per caption (training) rather than one per image (evaluation).

    Returns:
        The LLaVA-format records (``id``, ``image``, ``conversations``, ``task`` and, for
        evaluation, ``references``).
    """
    records = []
    for item in dataset.items:
        human = {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}
        answers = item["references"] if train else item["references"][:1]
        for k, answer in enumerate(answers):
            record: dict[str, Any] = {
                "id": f"{item['image_id']}_{k}" if train else item["image_id"],
                "image": item["image"],
                "conversations": [human, {"from": "gpt", "value": answer}],
                "task": "caption",
            }
            if not train:
                record["references"] = list(item["references"])
            records.append(record)
    return records


class CaptionConversationDataModule(_CaptionData):
    """RSICD, UCM-Captions, Sydney-Captions or NWPU-Captions as LLaVA conversations for the
    generators (see :class:`CaptionDataset`), built in memory.

    Training has one conversation per (image, caption), ``question`` -> caption; validation and
    test one per image, answered by its first caption and carrying all captions as
    ``references``, so :class:`~zoo.metrics.generation.GenerationMetrics` scores BLEU, METEOR,
    ROUGE-L and CIDEr against the five references as the papers do. Batches are exactly
    :class:`~zoo.data.conversations.ConversationCollate`'s, with task ``caption``.

    Args:
        root: the dataset folder.
        name: ``rsicd``, ``ucm``, ``sydney`` or ``nwpu``.
        question: the instruction asked for every image.
        max_length: conversations are truncated to this many tokens.
        image_size: images are resized to this square size.
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer`` (a generator's comes from its
            ``llm``; None with a tiny LLM builds a word-level tokenizer from the training
            captions), ``mean``, ``std`` of :class:`~zoo.data.datamodules.ZooDataModule`;
            ``images_dir``,
            ``annotation_file`` of :class:`_CaptionData`.
    """

    chat_tokenizer = True

    def __init__(
        self,
        root: str = "data/rsicd",
        name: CaptionName = "rsicd",
        question: str = "Describe this image briefly.",
        max_length: int = 256,
        image_size: int = 336,
        **kwargs: Any,
    ) -> None:
        super().__init__(ConversationDataset, root, name, image_size=image_size, **kwargs)
        self.question = question
        self.max_length = max_length

    def vocabulary(self) -> list[str]:
        """Words of the training captions, the question and the short-answer prompt.

        Returns:
            The sorted vocabulary.
        """
        return caption_words([*self.training_captions, self.question, SHORT_ANSWER_PROMPT])

    def _dataset(self, split: str) -> ConversationDataset:
        captions = self._captions(split)
        return ConversationDataset.from_records(
            captions.root,
            caption_records(captions, self.question, train=split == "train"),
            self.image_size,
            source=str(captions.annotation_path),
            image_dir=captions.images_dir,
        )

    def _collate(self) -> ConversationCollate:
        return ConversationCollate(
            self.tokenizer, self.max_length, short_answer_tasks=(), conversation=self.conversation
        )
