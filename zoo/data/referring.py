"""Referring segmentation as conversations: RefCOCO / RRSIS-D style refs over COCO masks.

Each sample is one image with ``K`` (``1..max_targets``) referred objects, asked for in one
question and answered with one *segmentation phrase* per object, in target order::

    human: <image>\\nPlease segment the large ship in the bottom right, the storage tank left of
           the ship.
    gpt:   Sure, the large ship in the bottom right is [SEG0_0] [SEG0_1] [SEG0_2] [SEG1_0]
           [SEG1_1] [SEG1_2], the storage tank left of the ship is [SEG0_0] ... [SEG1_2].

A segmentation phrase holds ``per_scale`` special tokens per mask-decoder scale
(:func:`seg_tokens`); the hidden states of the LLM at these tokens prompt the mask decoder.

The files are those of the embedded dataset (and of RefCOCO converted to COCO JSON):
``instances_{split}.json`` (COCO instances with RLE or polygon masks; ``lat``/``lon`` and
optionally ``gsd_m`` on each image) and ``refs_{split}.json`` (a list of
``{"ref_id", "ann_id", "image_id", "category_id", "sentences": [{"sent"}]}``).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import ConcatDataset, Dataset, Subset
from torchgeo.datasets import NonGeoDataset
from transformers import PreTrainedTokenizerBase

from zoo.data import embedded
from zoo.data.conversations import (
    IMAGE_TOKEN,
    SHORT_ANSWER_PROMPT,
    ConversationCollate,
    ConversationDataset,
)
from zoo.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, EmbeddedMixin, ZooDataModule
from zoo.data.image_text import caption_words, load_image
from zoo.data.tokenize import build_tokenizer

__all__ = [
    "SEG_TOKEN_TEMPLATE",
    "EmbeddedReferringDataModule",
    "ReferringCollate",
    "ReferringSegmentationDataModule",
    "ReferringSegmentationDataset",
    "add_seg_tokens",
    "seg_phrase",
    "seg_tokens",
]

SEG_TOKEN_TEMPLATE = "[SEG{scale}_{index}]"
"""Format of the segmentation tokens: ``index`` runs over the tokens of one ``scale``."""

_QUESTION = "Please segment {targets}."
_ANSWER = "Sure, {targets}."
_ANSWER_TARGET = "{sentence} is {seg}"
_JOIN = ", "
_TEMPLATES = (_QUESTION, _ANSWER, _ANSWER_TARGET, _JOIN)
_FIELD = re.compile(r"\{\w*\}")
_SPLITS = ("train", "val", "test")


def seg_tokens(num_scales: int = 2, per_scale: int = 3) -> list[str]:
    """The segmentation tokens of one target, scale-major: ``[SEG0_0] .. [SEG{s-1}_{n-1}]``."""
    if num_scales < 1 or per_scale < 1:
        raise ValueError(f"num_scales and per_scale must be >= 1, got {num_scales}, {per_scale}")
    return [
        SEG_TOKEN_TEMPLATE.format(scale=s, index=i)
        for s in range(num_scales)
        for i in range(per_scale)
    ]


def seg_phrase(num_scales: int = 2, per_scale: int = 3) -> str:
    """The segmentation phrase of one target: its tokens joined by spaces."""
    return " ".join(seg_tokens(num_scales, per_scale))


def template_words() -> list[str]:
    """Words the question and answer templates add to the referring sentences."""
    return caption_words([_FIELD.sub(" ", t) for t in _TEMPLATES])


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The extra special tokens (``extra_`` in transformers 5, ``additional_`` before)."""
    for name in ("extra_special_tokens", "additional_special_tokens"):
        found = getattr(tokenizer, name, None)
        if found:
            return [str(t) for t in (found.values() if isinstance(found, dict) else found)]
    return []


def add_seg_tokens(
    tokenizer: PreTrainedTokenizerBase, num_scales: int = 2, per_scale: int = 3
) -> PreTrainedTokenizerBase:
    """Add the segmentation tokens as special tokens (never split), keeping ``<image>`` and the
    other special tokens; returns the same tokenizer. Resize the LLM's embeddings afterwards."""
    existing = _special_tokens(tokenizer)
    new = [t for t in seg_tokens(num_scales, per_scale) if t not in existing]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": [*existing, *new]})
    return tokenizer


def _sentence(text: str) -> str:
    """A referring expression as a clause: stripped, without a final full stop."""
    return str(text).strip().rstrip(".").strip()


class ReferringSegmentationDataset(NonGeoDataset):
    """Images with ``1..max_targets`` referred objects each, as a conversation and masks.

    Images without refs are skipped. Which refs (and which of their sentences) a sample uses
    depends only on ``(seed, split, index)``: for ``train`` a random number of random refs and
    a random sentence of each; for ``val``/``test`` ``min(max_targets, refs)`` random refs with
    their first sentence, so evaluation is reproducible.

    Args:
        root: folder of ``instances_{split}.json``, ``refs_{split}.json`` and the images.
        split: ``train``, ``val`` or ``test``.
        image_size: images (bilinear) and masks (nearest) are resized to this square size.
        max_targets: at most this many objects per sample.
        num_scales: mask-decoder scales (segmentation tokens per target: ``num_scales *
            per_scale``).
        per_scale: segmentation tokens per scale.
        seed: seed of the target selection.
        transforms: a function applied to each sample dict.

    A sample holds ``image`` (float ``C×H×W`` in [0, 255]), ``mask`` (float ``K×H×W`` in
    {0, 1}), ``category`` (``K`` long, COCO category id - 1), ``id``, ``conversations``,
    ``task`` (``"referring"``), ``sentences`` (the ``K`` expressions) and, when the COCO image
    has ``lat``/``lon``, ``geo``: ``{"lat", "lon", "gsd_m"}`` with the ground sample distance
    in metres of a *resized* pixel (None unless the image has ``gsd_m``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 224,
        max_targets: int = 3,
        num_scales: int = 2,
        per_scale: int = 3,
        seed: int = 0,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if max_targets < 1:
            raise ValueError(f"max_targets must be >= 1, got {max_targets}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} does not exist: point root at the folder holding "
                f"instances_{split}.json, refs_{split}.json and the images, or use "
                "EmbeddedReferringDataModule"
            )
        self.split = split
        self.image_size = image_size
        self.max_targets = max_targets
        self.phrase = seg_phrase(num_scales, per_scale)
        self.seed = seed
        self.transforms = transforms
        self.instances_path = self.root / f"instances_{split}.json"
        self.refs_path = self.root / f"refs_{split}.json"
        for path in (self.instances_path, self.refs_path):
            if not path.is_file():
                raise FileNotFoundError(f"referring segmentation file {path} does not exist")
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco = COCO(str(self.instances_path))
        try:
            refs = json.loads(self.refs_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.refs_path} is not valid JSON: {error}") from error
        grouped: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for n, ref in enumerate(refs):
            where = f"{self.refs_path}, ref {n} (ref_id {ref.get('ref_id', '?')!r})"
            if ref.get("ann_id") not in self.coco.anns:
                raise ValueError(
                    f"{where}: ann_id {ref.get('ann_id')!r} is not in {self.instances_path}"
                )
            if not [s for s in ref.get("sentences", []) if _sentence(s.get("sent", ""))]:
                raise ValueError(f"{where}: no sentence")
            image_id = self.coco.anns[ref["ann_id"]]["image_id"]
            grouped[image_id].append(ref)
        self.image_ids = sorted(grouped)
        self.refs = [grouped[i] for i in self.image_ids]

    def __len__(self) -> int:
        return len(self.image_ids)

    def _targets(self, index: int) -> list[tuple[dict[str, Any], str]]:
        """The (ref, sentence) pairs of sample ``index``."""
        refs = self.refs[index]
        rng = np.random.default_rng([self.seed, _SPLITS.index(self.split), index])
        limit = min(self.max_targets, len(refs))
        train = self.split == "train"
        k = int(rng.integers(1, limit + 1)) if train else limit
        chosen = [refs[int(i)] for i in rng.permutation(len(refs))[:k]]
        pairs = []
        for ref in chosen:
            sentences = [_sentence(s["sent"]) for s in ref["sentences"]]
            sentences = [s for s in sentences if s]
            pairs.append(
                (ref, sentences[int(rng.integers(len(sentences)))] if train else sentences[0])
            )
        return pairs

    def _mask(self, ann: dict[str, Any], info: dict[str, Any], ref: dict[str, Any]) -> np.ndarray:
        where = f"ref {ref.get('ref_id', '?')!r} (ann {ann['id']}) of {self.refs_path}"
        mask = self.coco.annToMask(ann)
        expected = (int(info["height"]), int(info["width"]))
        if mask.shape != expected:
            raise ValueError(
                f"{where}: mask size {tuple(mask.shape)} differs from the image size (height, "
                f"width) {expected} of image {info['id']} ({info['file_name']}) in "
                f"{self.instances_path}"
            )
        if not mask.any():
            raise ValueError(f"{where}: no valid mask (the segmentation decodes to all zeros)")
        return mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        path = self.root / info["file_name"]
        image = load_image(path, f" (image {image_id} of {self.instances_path}, sample {index})")
        targets = self._targets(index)
        anns = [self.coco.anns[ref["ann_id"]] for ref, _ in targets]
        masks = torch.from_numpy(
            np.stack([self._mask(a, info, r) for a, (r, _) in zip(anns, targets, strict=True)])
        ).float()
        size = (self.image_size, self.image_size)
        width = image.shape[-1]
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        if tuple(masks.shape[-2:]) != size:
            masks = F.interpolate(masks[None], size=size, mode="nearest-exact")[0]
        sentences = [s for _, s in targets]
        question = _QUESTION.format(targets=_JOIN.join(sentences))
        answer = _ANSWER.format(
            targets=_JOIN.join(
                _ANSWER_TARGET.format(sentence=s, seg=self.phrase) for s in sentences
            )
        )
        sample: dict[str, Any] = {
            "image": image,
            "mask": masks,
            "category": torch.tensor([a["category_id"] - 1 for a in anns], dtype=torch.long),
            "id": Path(info["file_name"]).stem,
            "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
                {"from": "gpt", "value": answer},
            ],
            "task": "referring",
            "sentences": sentences,
        }
        if "lat" in info and "lon" in info:
            gsd = info.get("gsd_m")
            sample["geo"] = {
                "lat": float(info["lat"]),
                "lon": float(info["lon"]),
                "gsd_m": None if gsd is None else float(gsd) * width / self.image_size,
            }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class ReferringCollate:
    """Batch referring samples: the text as :class:`ConversationCollate` does, plus the masks.

    The ``labels`` cover the whole answer, segmentation tokens included: the LLM learns to
    emit them, and the mask decoder reads its hidden states at their positions.

    Adds to :class:`ConversationCollate`'s keys ``mask`` (``B×K×H×W`` float, zero padded to
    ``K = max_targets``), ``mask_valid`` (``B×K`` bool), ``category`` (``B×K`` long, -1
    padding), ``sentences`` (lists of strings) and ``geo`` (a dict or None per sample).

    Args:
        tokenizer: a chat tokenizer with ``<image>`` and the segmentation tokens.
        max_length: sequences are truncated to this many tokens.
        max_targets: the padded number of targets; a sample with more is an error.
    """

    _OWN = ("mask", "category", "sentences", "geo")

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int = 256, max_targets: int = 3
    ) -> None:
        self.text = ConversationCollate(tokenizer, max_length, short_answer_tasks=("vqa",))
        self.max_targets = max_targets

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples without ``mask`` (image-level conversations mixed in) have no targets."""
        text_keys = ("image", "id", "conversations", "task", "question_type")
        batch = self.text([{k: s.get(k, "") for k in text_keys} for s in samples])
        size = samples[0]["image"].shape[-2:]
        masks: list[Tensor] = [s["mask"] if "mask" in s else torch.zeros(0, *size) for s in samples]
        counts = [len(m) for m in masks]
        if max(counts) > self.max_targets:
            i = counts.index(max(counts))
            raise ValueError(
                f"sample {samples[i].get('id', i)!r} has {counts[i]} targets, more than "
                f"max_targets={self.max_targets}"
            )
        height, width = masks[0].shape[-2:]
        mask = torch.zeros(len(samples), self.max_targets, height, width)
        category = torch.full((len(samples), self.max_targets), -1, dtype=torch.long)
        for i, (m, s) in enumerate(zip(masks, samples, strict=True)):
            mask[i, : len(m)] = m
            if len(m):
                category[i, : len(m)] = s["category"]
        batch["mask"] = mask
        batch["mask_valid"] = torch.arange(self.max_targets) < torch.tensor(counts)[:, None]
        batch["category"] = category
        batch["sentences"] = [list(s.get("sentences", [])) for s in samples]
        batch["geo"] = [s.get("geo") for s in samples]
        return batch


class ReferringSegmentationDataModule(ZooDataModule):
    """Referring segmentation conversations (RefCOCO / RRSIS-D refs over COCO instances).

    The tokenizer gets the segmentation tokens (:func:`add_seg_tokens`): the model sizes its
    embeddings from ``len(tokenizer)`` and finds the tokens with ``seg_tokens(num_scales,
    per_scale)``.

    Args:
        root: folder of ``instances_{split}.json``, ``refs_{split}.json`` and the images.
        batch_size: samples per batch and device.
        num_workers: data-loading processes.
        image_size: images and masks are resized to this square size.
        tokenizer: the LLM's tokenizer (Hugging Face id or folder); None builds a word-level
            tokenizer from the training refs.
        max_length: conversations are truncated to this many tokens.
        max_targets: at most this many objects per sample (masks are padded to it).
        num_scales: mask-decoder scales.
        per_scale: segmentation tokens per scale.
        seed: seed of the target selection.
        mix_file: image-level LLaVA conversations (relative to root) mixed into training.
        mix_ratio: fraction of the training samples drawn from ``mix_file`` (0 mixes nothing).
        mean: per-band mean of [0, 1] pixels.
        std: per-band standard deviation of [0, 1] pixels.
    """

    chat_tokenizer = True

    def __init__(
        self,
        root: str = "data/refs",
        batch_size: int = 16,
        num_workers: int = 0,
        image_size: int = 336,
        tokenizer: str | None = None,
        max_length: int = 256,
        max_targets: int = 3,
        num_scales: int = 2,
        per_scale: int = 3,
        seed: int = 0,
        mix_file: str | None = None,
        mix_ratio: float = 0.0,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__(
            ReferringSegmentationDataset,
            batch_size,
            num_workers,
            root,
            image_size,
            tokenizer,
            mean,
            std,
        )
        self.max_length = max_length
        self.max_targets = max_targets
        self.num_scales = num_scales
        self.per_scale = per_scale
        self.seed = seed
        if not 0.0 <= mix_ratio < 1.0:
            raise ValueError(f"mix_ratio must be in [0, 1), got {mix_ratio}")
        if mix_ratio > 0 and mix_file is None:
            raise ValueError("mix_ratio > 0 needs mix_file (a LLaVA-format JSON under root)")
        self.mix_file = mix_file
        self.mix_ratio = mix_ratio

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The chat tokenizer with ``<image>`` and the segmentation tokens."""
        vocabulary = None if self.tokenizer_name is not None else self.vocabulary()
        tokenizer = build_tokenizer(self.tokenizer_name, vocabulary, chat=True)
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
        refs = json.loads((self.dataset_root / "refs_train.json").read_text(encoding="utf-8"))
        sentences = [str(s.get("sent", "")) for r in refs for s in r.get("sentences", [])]
        return caption_words([*sentences, *template_words()])

    def _dataset(self, split: str) -> Dataset:
        dataset = ReferringSegmentationDataset(
            self.dataset_root,
            split,
            self.image_size,
            self.max_targets,
            self.num_scales,
            self.per_scale,
            self.seed,
        )
        if split != "train" or self.mix_ratio == 0:
            return dataset
        # Image-level conversations (captions, VQA) mixed in: mix_ratio of the training samples.
        conversations = ConversationDataset(self.dataset_root, self.mix_file, self.image_size)
        count = round(len(dataset) * self.mix_ratio / (1 - self.mix_ratio))
        generator = torch.Generator().manual_seed(self.seed)
        index = torch.randint(len(conversations), (count,), generator=generator).tolist()
        return ConcatDataset([dataset, Subset(conversations, index)])

    def _collate(self) -> ReferringCollate:
        return ReferringCollate(self.tokenizer, self.max_length, self.max_targets)


class EmbeddedReferringDataModule(EmbeddedMixin, ReferringSegmentationDataModule):
    """The embedded dataset's referring expressions as segmentation conversations.

    Args:
        root: parent folder of the generated datasets.
        num_train: training images.
        num_val: validation images.
        num_test: test images.
        seed: generator seed (also seeds the target selection).
        batch_size: samples per batch and device.
        num_workers: data-loading processes.
        image_size: generated image size in pixels.
        tokenizer: the LLM's tokenizer; None uses the generator's own vocabulary.
        max_length: conversations are truncated to this many tokens.
        max_targets: at most this many objects per sample.
        num_scales: mask-decoder scales.
        per_scale: segmentation tokens per scale.
        mix_ratio: fraction of the training samples that are the embedded dataset's own
            captions and VQA (``conversations_train.json``); 0 mixes nothing.
    """

    def __init__(
        self,
        root: str = "data/embedded",
        num_train: int = 2000,
        num_val: int = 250,
        num_test: int = 250,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        image_size: int = 64,
        tokenizer: str | None = None,
        max_length: int = 192,
        max_targets: int = 3,
        num_scales: int = 2,
        per_scale: int = 3,
        mix_ratio: float = 0.0,
    ) -> None:
        super().__init__(
            root,
            batch_size,
            num_workers,
            image_size,
            tokenizer,
            max_length,
            max_targets,
            num_scales,
            per_scale,
            seed,
            "conversations_train.json",
            mix_ratio,
        )
        self.sizes = {"num_train": num_train, "num_val": num_val, "num_test": num_test}

    @cached_property
    def class_names(self) -> list[str]:
        return list(embedded.OBJECT_CATEGORIES)

    def vocabulary(self) -> list[str]:
        return sorted(
            {*embedded.vocabulary(), *template_words(), *caption_words([SHORT_ANSWER_PROMPT])}
        )
