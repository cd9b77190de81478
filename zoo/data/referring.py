"""Referring segmentation as conversations: RefCOCO / RRSIS-D style refs over COCO masks.

Each sample is one image with ``K`` (``1..max_targets``) referred objects, asked for in one
question and answered with one *segmentation phrase* per object, in target order::

    human: <image>\\nPlease segment the large ship in the bottom right, the storage tank left of
           the ship.
    gpt:   Sure, the large ship in the bottom right is [SEG0_0] [SEG0_1] [SEG0_2] [SEG1_0]
           [SEG1_1] [SEG1_2], the storage tank left of the ship is [SEG0_0] ... [SEG1_2].

A segmentation phrase holds ``per_scale`` special tokens per mask-decoder scale
(:func:`seg_tokens`); the hidden states of the LLM at these tokens prompt the mask decoder.

:class:`ReferringDataset` turns refs into samples (conversation, masks, categories) and
:class:`ReferringCollate` lays them out in batches. The file formats are elsewhere: the COCO +
refs layout (the embedded dataset's, RefCOCO converted to COCO JSON) and its datamodules in
:mod:`zoo.data.coco_refs`, the real benchmarks (RRSIS-D, RefSegRS) in
:mod:`zoo.data.referring_benchmarks`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchgeo.datasets import NonGeoDataset
from transformers import PreTrainedTokenizerBase

from zoo.data.bands import RGB, BandChoice
from zoo.data.conversations import (
    IMAGE_TOKEN,
    ConversationCollate,
)
from zoo.data.image_text import caption_words
from zoo.data.record_locations import batch_locations
from zoo.data.seg_targets import check_referring_batch, phrase_layout, phrase_token_ids

__all__ = [
    "SEG_TOKEN_TEMPLATE",
    "ReferringCollate",
    "ReferringDataset",
    "add_seg_tokens",
    "seg_phrase",
    "seg_tokens",
    "template_words",
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
    """The segmentation tokens of one target, scale-major: ``[SEG0_0] .. [SEG{s-1}_{n-1}]``.

    Args:
        num_scales: the mask decoder's scales.
        per_scale: tokens per scale.

    Returns:
        The tokens in order.

    Raises:
        ValueError: a count is below 1.
    """
    if num_scales < 1 or per_scale < 1:
        raise ValueError(f"num_scales and per_scale must be >= 1, got {num_scales}, {per_scale}")
    return [
        SEG_TOKEN_TEMPLATE.format(scale=s, index=i)
        for s in range(num_scales)
        for i in range(per_scale)
    ]


def seg_phrase(num_scales: int = 2, per_scale: int = 3) -> str:
    """The segmentation phrase of one target: its tokens joined by spaces.

    Args:
        num_scales: the mask decoder's scales.
        per_scale: tokens per scale.

    Returns:
        The phrase.
    """
    return " ".join(seg_tokens(num_scales, per_scale))


def template_words() -> list[str]:
    """Words the question and answer templates add to the referring sentences.

    Returns:
        The sorted words.
    """
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
    """Add the segmentation tokens as special tokens (never split).

    Keeps ``<image>`` and the other special tokens. Resize the LLM's embeddings afterwards.

    Args:
        tokenizer: the chat tokenizer.
        num_scales: the mask decoder's scales.
        per_scale: tokens per scale.

    Returns:
        The same tokenizer.
    """
    existing = _special_tokens(tokenizer)
    new = [t for t in seg_tokens(num_scales, per_scale) if t not in existing]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": [*existing, *new]})
    return tokenizer


def _sentence(text: str) -> str:
    """A referring expression as a clause: stripped, without a final full stop."""
    return str(text).strip().rstrip(".").strip()


class ReferringDataset(NonGeoDataset):
    """Core of the referring-segmentation datasets: samples of refs -> conversation and masks.

    A *ref* is a dict with ``sentences`` (``[{"sent": ...}]``, at least one non-empty) and
    whatever its subclass needs to find the mask. A sample holds one or more refs of one image:
    either all refs of an image (``per_ref=False``: ``1..max_targets`` of them are chosen per
    sample) or exactly one (``per_ref=True``, the referring benchmarks' protocol: each ref is
    one training sample with a random sentence, and ``val``/``test`` have one sample per ref and
    sentence, so every expression is evaluated exactly once).

    Which refs (and sentences) a sample uses depends only on ``(seed, split, index)``: for
    ``train`` a random number of random refs and a random sentence of each; for ``val``/``test``
    ``min(max_targets, refs)`` random refs with their first sentence.

    Subclasses set ``self.refs`` with :meth:`_set_samples` and implement :meth:`_image`,
    :meth:`_mask`, :meth:`_category` and :meth:`_sample_name` (and optionally :meth:`_geo`).

    Args:
        split: ``train``, ``val`` or ``test``.
        image_size: images (bilinear) and masks (nearest) are resized to this square size.
        max_targets: at most this many objects per sample.
        num_scales: mask-decoder scales (segmentation tokens per target: ``num_scales *
            per_scale``).
        per_scale: segmentation tokens per scale.
        seed: seed of the target selection.
        transforms: a function applied to each sample dict.
        every_instance: in ``val``/``test``, ask for every ref of an image (the multi-referring
            protocol of the paper's Table III): an image with more than ``max_targets`` refs
            becomes several samples (``<name>_part<j>``), so no instance is left out.
        original_resolution: in ``val``/``test``, also give ``mask_original`` (bool ``K×H×W``
            at the file's resolution), where the model computes the IoU.

    A sample holds ``image`` (float ``C×H×W`` in [0, 255]), ``mask`` (float ``K×H×W`` in
    {0, 1}), ``category`` (``K`` long, class index), ``id``, ``conversations``, ``task``
    (``"referring"``), ``sentences`` (the ``K`` expressions) and, where the source is
    georeferenced, ``geo``: ``{"lat", "lon", "gsd_m"}`` with the ground sample distance in
    metres of a *resized* pixel (None when unknown).
    """

    #: The bands read from each file (the datamodule sets its own, :mod:`zoo.data.bands`).
    band_choice: BandChoice = RGB

    def __init__(
        self,
        split: str = "train",
        image_size: int = 224,
        max_targets: int = 3,
        num_scales: int = 2,
        per_scale: int = 3,
        seed: int = 0,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        every_instance: bool = False,
        original_resolution: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if max_targets < 1:
            raise ValueError(f"max_targets must be >= 1, got {max_targets}")
        self.split = split
        self.image_size = image_size
        self.max_targets = max_targets
        self.phrase = seg_phrase(num_scales, per_scale)
        self.seed = seed
        self.transforms = transforms
        self.refs: list[list[dict[str, Any]]] = []
        self.sentence_index: list[int | None] = []
        self.parts: list[tuple[int, int]] = []  # (part, parts) of an image split by every_instance
        self.per_ref = False
        self.every_instance = every_instance and split != "train"
        self.original_resolution = original_resolution and split != "train"

    @staticmethod
    def sentences(ref: dict[str, Any]) -> list[str]:
        """The non-empty referring expressions of a ref, as clauses.

        Args:
            ref: a ref with ``sentences`` (``{"sent", ...}`` dicts).

        Returns:
            The expressions.
        """
        found = [_sentence(s.get("sent", "")) for s in ref.get("sentences", [])]
        return [s for s in found if s]

    def _set_samples(self, groups: Sequence[list[dict[str, Any]]], per_ref: bool) -> None:
        """The samples: each group is the refs of one image (in a fixed order)."""
        self.per_ref = per_ref
        if not per_ref and self.every_instance:  # every ref, max_targets per sample
            m = self.max_targets
            chunks = [[list(g[i : i + m]) for i in range(0, len(g), m)] for g in groups]
            self.refs = [c for g in chunks for c in g]
            self.parts = [(j, len(g)) for g in chunks for j in range(len(g))]
            self.sentence_index = [None] * len(self.refs)
        elif not per_ref:
            self.refs = [list(g) for g in groups]
            self.sentence_index = [None] * len(self.refs)
        elif self.split == "train":
            self.refs = [[ref] for g in groups for ref in g]
            self.sentence_index = [None] * len(self.refs)
        else:
            pairs = [(ref, j) for g in groups for ref in g for j in range(len(self.sentences(ref)))]
            self.refs = [[ref] for ref, _ in pairs]
            self.sentence_index = [j for _, j in pairs]

    def __len__(self) -> int:
        return len(self.refs)

    def verify(self, progress: bool | None = None) -> None:
        """Read every sample's image and masks once and check that they agree in size, so a
        broken sample stops the run in ``setup``, before the first step, naming the sample.

        Args:
            progress: show a progress bar (default: for more than 1,000 samples).
        """
        from tqdm import tqdm

        seen: set[int] = set()
        show = len(self) > 1000 if progress is None else progress
        for index in tqdm(range(len(self)), desc=f"checking {self.split}", disable=not show):
            refs = [r for r in self.refs[index] if id(r) not in seen]
            if not refs and self.per_ref:
                continue
            image = self._image(index)
            for ref in refs:
                seen.add(id(ref))
                shape = tuple(np.asarray(self._mask(index, ref)).shape[-2:])
                if shape != tuple(image.shape[-2:]):
                    raise ValueError(
                        f"sample {index} ({self._sample_id(index)}) of the {self.split} split: "
                        f"mask size (height, width) {shape} differs from the image size "
                        f"{tuple(image.shape[-2:])}"
                    )

    def _targets(self, index: int) -> list[tuple[dict[str, Any], str]]:
        """The (ref, sentence) pairs of sample ``index``."""
        refs = self.refs[index]
        rng = np.random.default_rng([self.seed, _SPLITS.index(self.split), index])
        limit = min(self.max_targets, len(refs))
        train = self.split == "train"
        k = int(rng.integers(1, limit + 1)) if train else limit
        chosen = [refs[int(i)] for i in rng.permutation(len(refs))[:k]]
        fixed = self.sentence_index[index]
        pairs = []
        for ref in chosen:
            sentences = self.sentences(ref)
            if fixed is not None:
                pairs.append((ref, sentences[fixed]))
            else:
                pairs.append(
                    (ref, sentences[int(rng.integers(len(sentences)))] if train else sentences[0])
                )
        return pairs

    def _image(self, index: int) -> Tensor:
        """The image of sample ``index``: float ``C×H×W`` in [0, 255]."""
        raise NotImplementedError

    def _mask(self, index: int, ref: dict[str, Any]) -> np.ndarray:
        """The mask of ``ref`` in sample ``index``: ``H×W``, non-zero on the object."""
        raise NotImplementedError

    def _category(self, ref: dict[str, Any]) -> int:
        """The class index of ``ref`` (0 where the dataset has one class)."""
        raise NotImplementedError

    def _sample_name(self, index: int) -> str:
        """The name of the image of sample ``index`` (file stem)."""
        raise NotImplementedError

    def _geo(self, index: int) -> dict[str, Any] | None:
        """``{"lat", "lon", "gsd_m"}`` of the image (gsd of a file pixel), or None."""
        return None

    def _sample_id(self, index: int) -> str:
        """A unique id: the image name, plus ref (and sentence) where a sample is one ref."""
        name = self._sample_name(index)
        if self.parts and self.parts[index][1] > 1:
            return f"{name}_part{self.parts[index][0]}"
        if not self.per_ref:
            return name
        name = f"{name}_ref{self.refs[index][0].get('ref_id', index)}"
        fixed = self.sentence_index[index]
        return name if fixed is None else f"{name}_s{fixed}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self._image(index)
        targets = self._targets(index)
        masks = torch.from_numpy(
            np.stack([self._mask(index, ref) != 0 for ref, _ in targets])
        ).float()
        sample_id = self._sample_id(index)
        original = masks.bool() if self.original_resolution else None
        if masks.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"sample {index} ({sample_id}) of the {self.split} split: mask size (height, "
                f"width) {tuple(masks.shape[-2:])} differs from the image size "
                f"{tuple(image.shape[-2:])}"
            )
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
            "category": torch.tensor([self._category(r) for r, _ in targets], dtype=torch.long),
            "id": sample_id,
            "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
                {"from": "gpt", "value": answer},
            ],
            "task": "referring",
            "sentences": sentences,
        }
        if original is not None:
            sample["mask_original"] = original
        geo = self._geo(index)
        if geo is not None:
            gsd = geo.get("gsd_m")
            sample["geo"] = {
                "lat": float(geo["lat"]),
                "lon": float(geo["lon"]),
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
    padding), ``sentences`` (lists of strings), ``geo`` (a dict or None per sample),
    ``mask_original`` (where the samples have it: one bool ``K_i×H_i×W_i`` per sample) and the
    targets' layout ``target_index`` and ``target_positions``, checked with the categories
    (below ``num_classes``, set by the datamodule): see :mod:`zoo.data.seg_targets`.

    Args:
        tokenizer: a chat tokenizer with ``<image>`` and the segmentation tokens.
        max_length: sequences are truncated to this many tokens.
        max_targets: the padded number of targets; a sample with more is an error.
        conversation: the conversation format (None: the tokenizer's default).
    """

    _OWN = ("mask", "category", "sentences", "geo", "mask_original")
    num_classes: int | None = None

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        max_targets: int = 3,
        conversation: str | None = None,
    ) -> None:
        self.text = ConversationCollate(
            tokenizer, max_length, short_answer_tasks=("vqa",), conversation=conversation
        )
        self.max_targets = max_targets
        self.seg_token_ids = phrase_token_ids(tokenizer, _special_tokens(tokenizer))

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
        location = batch_locations(samples)
        if location is not None:
            batch["location"] = location
        if any("mask_original" in s for s in samples):
            batch["mask_original"] = [
                s.get("mask_original", torch.zeros(0, 1, 1, dtype=torch.bool)) for s in samples
            ]
        ids = [s.get("id", i) for i, s in enumerate(samples)]
        batch.update(
            phrase_layout(batch["input_ids"], self.seg_token_ids, counts, self.max_targets, ids)
        )
        check_referring_batch(batch, self.num_classes)
        return batch
