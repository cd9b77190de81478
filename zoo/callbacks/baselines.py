"""What a fit's validation metrics must beat, computed from the validation data itself.

:func:`validation_baselines` reads a datamodule's splits (no model) and scores a trivial
predictor with the very metric the model is scored with:

* **VQA** (conversations with ``vqa`` questions): the most frequent training answer of each
  question type, scored on the validation questions by
  :class:`~zoo.metrics.generation.GenerationMetrics` (``vqa_accuracy`` and its per-type rows);
* **zero-shot and k-NN accuracy** (image-text data with scene classes): chance, one over the
  number of classes; **retrieval Recall@k**: chance, ``k`` over the number of candidates;
* **referring segmentation mIoU / cIoU**: a mask covering the whole image for every referred
  object, scored by :class:`~zoo.metrics.segmentation.ReferringIoU`.

:class:`~zoo.callbacks.summary.MetricsSummary` prints them beside the fit's final values.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch

from zoo.metrics.generation import GenerationMetrics
from zoo.metrics.segmentation import ReferringIoU
from zoo.metrics.vqa import normalize_answer

__all__ = [
    "Baseline",
    "chance_baselines",
    "majority_answers",
    "majority_vqa_baselines",
    "validation_baselines",
    "whole_image_baselines",
]

#: The Recall@k cut-offs reported by the retrieval metrics.
RECALL_KS = (1, 5, 10)
#: The retrieval directions of FLAVARS' metrics (``<a>_to_<b>_R@k``).
RETRIEVAL_PAIRS = (("image", "text"), ("image", "location"))


class Baseline(NamedTuple):
    """A baseline value and what it is.

    Args:
        value: the metric's value for the trivial predictor.
        name: what the predictor is (``majority answer``, ``chance``, ``whole-image mask``).
    """

    value: float
    name: str


def majority_answers(records: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The most frequent (normalized) answer of each question type in training conversations.

    Args:
        records: LLaVA-format records with ``conversations`` and ``question_types`` (one type
            per question, in turn order); records without types are skipped.

    Returns:
        The majority answer per question type; ``""`` maps to the most frequent answer over
        all types (for questions of a type never seen in training). Ties go to the answer seen
        first.
    """
    answers: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        turns = record["conversations"]
        for k, qtype in enumerate(record.get("question_types") or []):
            if 2 * k + 1 < len(turns):
                answer = normalize_answer(str(turns[2 * k + 1]["value"]))
                answers[str(qtype)][answer] += 1
                answers[""][answer] += 1
    return {qtype: counts.most_common(1)[0][0] for qtype, counts in answers.items()}


def majority_vqa_baselines(
    train_records: Iterable[dict[str, Any]],
    eval_records: Sequence[dict[str, Any]],
    question_types: Sequence[str] = (),
) -> dict[str, Baseline]:
    """VQA accuracy of answering each question with its type's majority training answer.

    Args:
        train_records: the training conversations (multi-turn records).
        eval_records: the scored samples, one question each (the validation split as the
            model's loader yields it: ``task``, ``conversations``, ``question_types``).
        question_types: the question types reported separately (the model's); empty: the
            types found in ``eval_records``.

    Returns:
        ``vqa_accuracy`` (and ``vqa_accuracy_<type>`` per type) as
        :class:`~zoo.metrics.generation.GenerationMetrics` computes them; empty without VQA
        questions to score or training answers to count.
    """
    majority = majority_answers(train_records)
    scored = ("vqa", "", "location")  # location: the embedded data's location questions
    vqa = [r for r in eval_records if r.get("task") in scored and r.get("question_types")]
    if not majority or not vqa:
        return {}
    types = [str(r["question_types"][0]) for r in vqa]
    metrics = GenerationMetrics(list(question_types) or sorted(set(types)))
    batch = {
        "task": ["vqa"] * len(vqa),
        "question_type": types,
        "reference": [str(r["conversations"][1]["value"]) for r in vqa],
    }
    metrics.update(batch, [majority.get(t, majority[""]) for t in types])
    name = "majority answer"
    return {
        k: Baseline(float(v), name)
        for k, v in metrics.compute().items()
        if k.startswith("vqa_") and v.numel() == 1 and torch.isfinite(v)
    }


def whole_image_baselines(targets: Iterable[torch.Tensor]) -> dict[str, Baseline]:
    """mIoU and cIoU of predicting the whole image for every referred object.

    Args:
        targets: target masks ``K×H×W`` (bool or {0, 1}), one tensor per image or batch.

    Returns:
        ``mIoU`` and ``cIoU`` as :class:`~zoo.metrics.segmentation.ReferringIoU` computes
        them; empty without targets.
    """
    metric = ReferringIoU()
    for mask in targets:
        if len(mask):
            metric.update(torch.ones_like(mask, dtype=torch.bool), mask > 0.5)
    if not metric.update_called or float(metric.count) == 0:
        return {}
    return {k: Baseline(float(v), "whole-image mask") for k, v in metric.compute().items()}


def chance_baselines(num_samples: int, num_classes: int) -> dict[str, Baseline]:
    """Chance of the image-text metrics: one class in ``num_classes``, ``k`` candidates in
    ``num_samples``.

    Args:
        num_samples: the evaluated pairs (each query ranks this many candidates).
        num_classes: the scene classes (0: no classification metrics).

    Returns:
        ``zero_shot_acc`` and ``knn_acc`` (with classes) and every ``<a>_to_<b>_R@k``.
    """
    out: dict[str, Baseline] = {}
    if num_classes > 0:
        out["zero_shot_acc"] = out["knn_acc"] = Baseline(1.0 / num_classes, "chance")
    if num_samples > 0:
        for a, b in RETRIEVAL_PAIRS:
            for k in RECALL_KS:
                value = Baseline(min(1.0, k / num_samples), "chance")
                out[f"{a}_to_{b}_R@{k}"] = out[f"{b}_to_{a}_R@{k}"] = value
    return out


def validation_baselines(
    datamodule: Any,
    num_batches: int | None = None,
    question_types: Sequence[str] = (),
    generated_batches: int | None = None,
) -> dict[str, Baseline]:
    """The baselines of a datamodule's validation split, by what its samples hold.

    Args:
        datamodule: a set-up datamodule (``train_dataset`` and ``val_dataset``).
        num_batches: the validation batches run (None: all), in the unshuffled loader's
            order: the first ``num_batches × batch_size`` samples (masks, embeddings).
        question_types: the VQA question types the model reports separately.
        generated_batches: the first validation batches whose answers are generated and
            scored (a generator's ``val_generate_batches``; None: ``num_batches``).

    Returns:
        The baselines by metric name (without the ``val_`` prefix); empty for data it does
        not know.
    """
    val = getattr(datamodule, "val_dataset", None)
    if val is None:
        return {}

    def samples(batches: int | None) -> int | None:
        return None if batches is None else batches * int(datamodule.batch_size)

    limit = samples(num_batches)
    generated = limit if generated_batches is None else samples(generated_batches)
    if limit is not None and generated is not None:
        generated = min(limit, generated)
    records = getattr(val, "records", None)
    train = getattr(datamodule, "train_dataset", None)
    if records is not None and train is not None and hasattr(train, "records"):
        if records and "conversations" in records[0] and not hasattr(val, "refs"):
            return majority_vqa_baselines(train.records, records[:generated], question_types)
    if hasattr(datamodule, "class_names") and hasattr(val, "has_location"):
        n = len(val) if limit is None else min(limit, len(val))
        return chance_baselines(n, len(datamodule.class_names))
    if "mask" in val[0]:
        return whole_image_baselines(_val_targets(datamodule, num_batches))
    return {}


def _val_targets(datamodule: Any, num_batches: int | None) -> Iterable[torch.Tensor]:
    """The real target masks of each validation batch, at the resolution the IoU is taken."""
    for i, batch in enumerate(datamodule.val_dataloader()):
        if num_batches is not None and i >= num_batches:
            return
        if "mask" not in batch:
            continue
        originals = batch.get("mask_original")
        if originals is not None:
            yield from originals
        else:
            yield batch["mask"][batch["mask_valid"].bool()]
