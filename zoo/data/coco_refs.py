"""Referring segmentation in the COCO + refs layout: its datasets and datamodules.

``root`` holds ``instances_{split}.json`` (COCO instances with RLE or polygon masks;
``lat``/``lon`` and optionally ``gsd_m`` on each image), ``refs_{split}.json`` (a list of
``{"ref_id", "ann_id", "image_id", "category_id", "sentences": [{"sent"}]}``) and the images.
The embedded dataset writes this layout, and RefCOCO-style refs converted to COCO JSON read the
same way. :class:`CocoReferringDataset` reads refs over an in-memory COCO object (the core of
every COCO-based loader, RRSIS-D's too); :class:`ReferringSegmentationDataset` reads the files;
:class:`ReferringSegmentationDataModule` is the datamodule every referring benchmark builds on.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset, Subset
from transformers import PreTrainedTokenizerBase

from zoo.data import embedded
from zoo.data.conversations import SHORT_ANSWER_PROMPT, ConversationDataset
from zoo.data.datamodules import DEFAULT_SPLITS, EmbeddedSource, EmbeddedSplits, ZooDataModule
from zoo.data.image_text import caption_words, load_image
from zoo.data.referring import (
    ReferringCollate,
    ReferringDataset,
    add_seg_tokens,
    seg_tokens,
    template_words,
)
from zoo.data.tokenize import build_tokenizer
from zoo.io import read_json, require_dir

__all__ = [
    "CocoReferringDataset",
    "CocoRefsDataModule",
    "EmbeddedReferringDataModule",
    "ReferringSegmentationDataModule",
    "ReferringSegmentationDataset",
    "embedded_referring_vocabulary",
    "load_coco",
    "read_refs_json",
]


def load_coco(path: Path) -> COCO:
    """Read a COCO instances file quietly.

    Args:
        path: the COCO instances JSON file.

    Returns:
        The indexed pycocotools ``COCO`` object.

    Raises:
        ValueError: the file lacks ``images``, ``annotations`` or ``categories`` (a missing or
            unreadable file raises :func:`~zoo.io.read_json`'s clear error naming it).
    """
    dataset = read_json(path, "COCO instances file")
    keys = ("images", "annotations", "categories")
    if not isinstance(dataset, dict) or not all(k in dataset for k in keys):
        found = sorted(dataset) if isinstance(dataset, dict) else type(dataset).__name__
        raise ValueError(f"{path}: a COCO instances file needs the keys {keys}, found {found}")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoReferringDataset(ReferringDataset):
    """Refs over the masks of an in-memory COCO object: the core of the COCO-based loaders.

    Args:
        coco: COCO instances (RLE or polygon ``segmentation``); images may carry ``lat``,
            ``lon`` and ``gsd_m``.
        refs: ``{"ref_id", "ann_id", "sentences": [{"sent"}], ...}`` of this split.
        image_root: folder the images' ``file_name`` are relative to.
        per_ref: one ref per sample (see :class:`ReferringDataset`) instead of one image.
        refs_source: the refs' file (for error messages).
        instances_source: the COCO file (for error messages).
        **kwargs: ``split``, ``image_size``, ``max_targets``, ``num_scales``, ``per_scale``,
            ``seed``, ``transforms`` of :class:`~zoo.data.referring.ReferringDataset`.

    ``category`` is the position of the COCO category id among the sorted ids of ``coco``
    (``id - 1`` for ids ``1..N``). Images without refs are skipped.
    """

    def __init__(
        self,
        coco: COCO,
        refs: Sequence[dict[str, Any]],
        image_root: str | Path,
        per_ref: bool = False,
        refs_source: str = "refs",
        instances_source: str = "instances",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.coco = coco
        self.image_root = Path(image_root)
        self.refs_source = refs_source
        self.instances_source = instances_source
        self.category_index = {c: i for i, c in enumerate(sorted(coco.cats))}
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for n, ref in enumerate(refs):
            where = f"{refs_source}, ref {n} (ref_id {ref.get('ref_id', '?')!r})"
            ann = coco.anns.get(ref.get("ann_id"))
            if ann is None:
                raise ValueError(
                    f"{where}: ann_id {ref.get('ann_id')!r} is not in {instances_source}"
                )
            if not self.sentences(ref):
                raise ValueError(f"{where}: no sentence")
            if ann.get("category_id") not in self.category_index:
                raise ValueError(
                    f"{where}: category_id {ann.get('category_id')!r} of ann {ann['id']} is not "
                    f"among the categories of {instances_source}"
                )
            if ann["image_id"] not in coco.imgs:
                raise ValueError(
                    f"{where}: image_id {ann['image_id']!r} of ann {ann['id']} is not among the "
                    f"images of {instances_source}"
                )
            grouped[ann["image_id"]].append(ref)
        self.image_ids = sorted(grouped)
        self._set_samples([grouped[i] for i in self.image_ids], per_ref)
        self._image_of = [self.coco.anns[g[0]["ann_id"]]["image_id"] for g in self.refs]

    def _image(self, index: int) -> Tensor:
        image_id = self._image_of[index]
        path = self.image_root / self.coco.imgs[image_id]["file_name"]
        return load_image(
            path,
            f" (image {image_id} of {self.instances_source}, sample {index})",
            self.band_choice,
        )

    def _mask(self, index: int, ref: dict[str, Any]) -> np.ndarray:
        ann = self.coco.anns[ref["ann_id"]]
        info = self.coco.imgs[ann["image_id"]]
        where = f"ref {ref.get('ref_id', '?')!r} (ann {ann['id']}) of {self.refs_source}"
        try:
            mask = self.coco.annToMask(ann)
        except Exception as error:  # pycocotools raises bare TypeErrors/ValueErrors
            raise ValueError(f"{where}: cannot decode its segmentation: {error}") from error
        expected = (int(info["height"]), int(info["width"]))
        if mask.shape != expected:
            raise ValueError(
                f"{where}: mask size {tuple(mask.shape)} differs from the image size (height, "
                f"width) {expected} of image {info['id']} ({info['file_name']}) in "
                f"{self.instances_source}"
            )
        if not mask.any():
            raise ValueError(f"{where}: no valid mask (the segmentation decodes to all zeros)")
        return mask

    def _category(self, ref: dict[str, Any]) -> int:
        return self.category_index[self.coco.anns[ref["ann_id"]]["category_id"]]

    def _sample_name(self, index: int) -> str:
        return Path(self.coco.imgs[self._image_of[index]]["file_name"]).stem

    def _geo(self, index: int) -> dict[str, Any] | None:
        info = self.coco.imgs[self._image_of[index]]
        if "lat" in info and "lon" in info:
            return {"lat": info["lat"], "lon": info["lon"], "gsd_m": info.get("gsd_m")}
        return None


def read_refs_json(path: Path) -> list[dict[str, Any]]:
    """Read a ``refs_{split}.json`` list.

    Args:
        path: the referring segmentation file.

    Returns:
        The ref objects.

    Raises:
        ValueError: the file is not a JSON list of objects (a missing or unreadable file raises
            :func:`~zoo.io.read_json`'s clear error naming it).
    """
    refs = read_json(path, "referring segmentation file")
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise ValueError(f"{path}: expected a JSON list of ref objects")
    return refs


class ReferringSegmentationDataset(CocoReferringDataset):
    """Referring segmentation in the COCO + refs layout, one file pair per split.

    ``root`` holds ``instances_{split}.json`` (COCO instances with RLE or polygon masks;
    ``lat``/``lon`` and optionally ``gsd_m`` on each image), ``refs_{split}.json`` (a list of
    ``{"ref_id", "ann_id", "image_id", "category_id", "sentences": [{"sent"}]}``) and the
    images (``file_name`` relative to root). The embedded dataset writes this layout, and
    RefCOCO-style refs converted to COCO JSON read the same way.

    Args:
        root: folder of ``instances_{split}.json``, ``refs_{split}.json`` and the images.
        split: ``train``, ``val`` or ``test``.
        image_size: images (bilinear) and masks (nearest) are resized to this square size.
        per_ref: one ref per sample (the benchmarks' protocol) instead of one image.
        **kwargs: ``max_targets``, ``num_scales``, ``per_scale``, ``seed``, ``transforms`` of
            :class:`~zoo.data.referring.ReferringDataset`.

    Samples as in :class:`ReferringDataset` (``category``: COCO category id - 1 for ids
    ``1..N``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 224,
        per_ref: bool = False,
        **kwargs: Any,
    ) -> None:
        self.root = require_dir(
            root,
            f"Point root at the folder holding instances_{split}.json, refs_{split}.json "
            "and the images, or use EmbeddedReferringDataModule",
        )
        self.instances_path = self.root / f"instances_{split}.json"
        self.refs_path = self.root / f"refs_{split}.json"
        for path in (self.instances_path, self.refs_path):
            if not path.is_file():
                raise FileNotFoundError(f"referring segmentation file {path} does not exist")
        super().__init__(
            load_coco(self.instances_path),
            read_refs_json(self.refs_path),
            self.root,
            per_ref,
            str(self.refs_path),
            str(self.instances_path),
            split=split,
            image_size=image_size,
            **kwargs,
        )


class ReferringSegmentationDataModule(ZooDataModule):
    """Referring segmentation conversations (RefCOCO / RRSIS-D refs over COCO instances).

    The tokenizer gets the segmentation tokens (:func:`add_seg_tokens`): the model sizes its
    embeddings from ``len(tokenizer)`` and finds the tokens with ``seg_tokens(num_scales,
    per_scale)``.

    Args:
        root: folder of ``instances_{split}.json``, ``refs_{split}.json`` and the images.
        max_length: conversations are truncated to this many tokens.
        max_targets: at most this many objects per sample (masks are padded to it).
        num_scales: mask-decoder scales.
        per_scale: segmentation tokens per scale.
        seed: seed of the target selection.
        every_instance: in ``val``/``test`` every ref of an image is asked for (Table III's
            multi-referring protocol), ``max_targets`` per sample.
        original_resolution: in ``val``/``test`` the IoU is computed at the images' original
            resolution (the batch carries ``mask_original``).
        mix_file: image-level LLaVA conversations (relative to root) mixed into training.
        mix_ratio: fraction of the training samples drawn from ``mix_file`` (0 mixes nothing).
        mix_samples: instead of a ratio, a fixed random subset (seeded by ``seed``, without
            replacement) of this many ``mix_file`` conversations, or ``"all"`` of them (GeoPix's
            stage 1: all of VRSBench; stage 2: 8,000 of its samples).
        image_size: images and masks are resized to this square size.
        **kwargs: ``batch_size``, ``num_workers``, ``tokenizer`` (the LLM's; None builds a
            word-level tokenizer from the training refs), ``mean``, ``std`` of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    chat_tokenizer = True

    def __init__(
        self,
        root: str = "data/refs",
        max_length: int = 256,
        max_targets: int = 3,
        num_scales: int = 2,
        per_scale: int = 3,
        seed: int = 0,
        every_instance: bool = False,
        original_resolution: bool = False,
        mix_file: str | None = None,
        mix_ratio: float = 0.0,
        mix_samples: int | Literal["all"] | None = None,
        image_size: int = 336,
        **kwargs: Any,
    ) -> None:
        super().__init__(ReferringSegmentationDataset, root=root, image_size=image_size, **kwargs)
        self.max_length = max_length
        self.max_targets = max_targets
        self.num_scales = num_scales
        self.per_scale = per_scale
        self.seed = seed
        self.every_instance = every_instance
        self.original_resolution = original_resolution
        if not 0.0 <= mix_ratio < 1.0:
            raise ValueError(f"mix_ratio must be in [0, 1), got {mix_ratio}")
        if mix_ratio > 0 and mix_file is None:
            raise ValueError("mix_ratio > 0 needs mix_file (a LLaVA-format JSON under root)")
        if mix_samples is not None and (mix_ratio > 0 or mix_file is None):
            raise ValueError(
                "mix_samples needs mix_file and replaces mix_ratio (set mix_ratio to 0)"
            )
        if isinstance(mix_samples, int) and mix_samples < 1:
            raise ValueError(f"mix_samples must be positive or 'all', got {mix_samples}")
        self.mix_file = mix_file
        self.mix_ratio = mix_ratio
        self.mix_samples = mix_samples

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The chat tokenizer with ``<image>`` and the segmentation tokens."""
        vocabulary = None if self.tokenizer_name is not None else self.vocabulary()
        tokenizer = build_tokenizer(
            self.tokenizer_name,
            vocabulary,
            chat=True,
            gguf_file=self.gguf_file,
        )
        return add_seg_tokens(tokenizer, self.num_scales, self.per_scale)

    @cached_property
    def class_names(self) -> list[str]:
        """Object categories in COCO id order (linked to the model: the memory's classes)."""
        path = self.dataset_root / "instances_train.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} does not exist: point root at a folder with COCO instances and refs"
            )
        categories = json.loads(path.read_text(encoding="utf-8"))["categories"]
        return [c["name"] for c in sorted(categories, key=lambda c: c["id"])]

    @property
    def seg_tokens(self) -> list[str]:
        """The segmentation tokens of one target."""
        return seg_tokens(self.num_scales, self.per_scale)

    def vocabulary(self) -> list[str]:
        """Words of the training sentences and the answer templates, for the word-level tokenizer.

        Returns:
            The sorted vocabulary.
        """
        refs = read_refs_json(self.dataset_root / "refs_train.json")
        sentences = [str(s.get("sent", "")) for r in refs for s in r.get("sentences", [])]
        return caption_words([*sentences, *template_words()])

    def _referring_dataset(self, split: str) -> ReferringDataset:
        """The referring samples of ``split`` (subclasses read other layouts here)."""
        return ReferringSegmentationDataset(self.dataset_root, split, **self._sample_args())

    def _sample_args(self) -> dict[str, Any]:
        """What every referring dataset of this datamodule takes: size, targets, tokens, seed."""
        return dict(
            image_size=self.image_size,
            max_targets=self.max_targets,
            num_scales=self.num_scales,
            per_scale=self.per_scale,
            seed=self.seed,
            every_instance=self.every_instance,
            original_resolution=self.original_resolution,
        )

    def _dataset(self, split: str) -> Dataset:
        dataset = self._referring_dataset(split)
        dataset.verify()  # every image and mask once, before the first step
        if split != "train" or (self.mix_ratio == 0 and self.mix_samples is None):
            return dataset
        # Image-level conversations (captions, VQA) mixed in: a fixed subset, or mix_ratio of the
        # training samples drawn with replacement.
        conversations = ConversationDataset(self.dataset_root, self.mix_file, self.image_size)
        generator = torch.Generator().manual_seed(self.seed)
        if self.mix_samples == "all":
            return ConcatDataset([dataset, conversations])
        if self.mix_samples is not None:
            if self.mix_samples > len(conversations):
                raise ValueError(
                    f"mix_samples={self.mix_samples} but {self.mix_file} holds "
                    f"{len(conversations)} conversations"
                )
            index = torch.randperm(len(conversations), generator=generator)[: self.mix_samples]
            return ConcatDataset([dataset, Subset(conversations, index.tolist())])
        count = round(len(dataset) * self.mix_ratio / (1 - self.mix_ratio))
        index = torch.randint(len(conversations), (count,), generator=generator).tolist()
        return ConcatDataset([dataset, Subset(conversations, index)])

    def _collate(self) -> ReferringCollate:
        collate = ReferringCollate(
            self.tokenizer, self.max_length, self.max_targets, self.conversation
        )
        collate.num_classes = len(self.class_names)
        return collate


class CocoRefsDataModule(ReferringSegmentationDataModule):
    """Referring segmentation in the generic COCO + refs layout (one file pair per split).

    The layout the embedded dataset writes and RefCOCO-style data converts to: ``root`` holds
    ``instances_{split}.json`` (COCO instances, RLE or polygon masks), ``refs_{split}.json``
    (``[{"ref_id", "ann_id", "sentences": [{"sent"}]}]``) and the images. The same datamodule
    as :class:`ReferringSegmentationDataModule` under the name of its format; see there for
    the arguments (``configs/data/coco_refs.yaml``).
    """


class EmbeddedReferringDataModule(ReferringSegmentationDataModule):
    """The embedded dataset's referring expressions as segmentation conversations.

    Args:
        root: parent folder of the generated datasets (as for
            :class:`~zoo.data.datamodules.EmbeddedDataModule`).
        splits: images per split.
        seed: generator seed (also seeds the target selection).
        max_length: conversations are truncated to this many tokens.
        mix_ratio: fraction of the training samples that are the embedded dataset's own
            captions and VQA (``conversations_train.json``); 0 mixes nothing.
        image_size: generated image size in pixels.
        **kwargs: ``max_targets``, ``num_scales``, ``per_scale`` of
            :class:`ReferringSegmentationDataModule`; ``batch_size``, ``num_workers``,
            ``tokenizer`` (None: the generator's own vocabulary) of
            :class:`~zoo.data.datamodules.ZooDataModule`.
    """

    def __init__(
        self,
        root: str = "data/embedded",
        splits: EmbeddedSplits = DEFAULT_SPLITS,
        seed: int = 0,
        max_length: int = 192,
        mix_ratio: float = 0.0,
        image_size: int = 64,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            root,
            max_length,
            seed=seed,
            mix_file="conversations_train.json",
            mix_ratio=mix_ratio,
            image_size=image_size,
            **kwargs,
        )
        self.source = EmbeddedSource(root, image_size, seed, splits)

    @cached_property
    def class_names(self) -> list[str]:
        """The embedded dataset's object categories."""
        return list(embedded.OBJECT_CATEGORIES)

    def vocabulary(self) -> list[str]:
        """Words of the embedded referring conversations.

        Returns:
            The sorted vocabulary (:func:`embedded_referring_vocabulary`).
        """
        return embedded_referring_vocabulary()


def embedded_referring_vocabulary() -> list[str]:
    """The words of the embedded referring conversations (its word-level tokenizer's).

    Returns:
        The sorted words of the scene descriptions, the answer templates and the short-answer
        prompt.
    """
    return sorted(
        {*embedded.vocabulary(), *template_words(), *caption_words([SHORT_ANSWER_PROMPT])}
    )
