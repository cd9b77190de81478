"""Scene classification by generation: the generator names the class of each image.

The model gets the image and one question listing the dataset's classes (GeoChat's and
FUSE's benchmark style) and decodes an answer; a sample counts when the normalized answer
(:func:`~zoo.metrics.vqa.normalize_answer`, underscores read as spaces) equals the normalized
name of its class. Reports ``generation_acc`` (over all test images) and
``generation_mean_per_class``. Works for every zoo generator (the
:class:`~zoo.models.capabilities.Generation` capability) on any scene datamodule.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning import LightningDataModule

from zoo.data.conversations import IMAGE_TOKEN, generation_prompt
from zoo.evaluation.base import Context, Evaluation
from zoo.evaluation.features import num_classes
from zoo.metrics.vqa import normalize_answer
from zoo.models.capabilities import Generation

__all__ = ["DEFAULT_SCENE_QUESTION", "SceneClassificationByGeneration", "class_answer"]

#: ``{classes}`` is replaced by the class names, comma separated.
DEFAULT_SCENE_QUESTION = (
    "Classify the image within one of the given classes: {classes}. Answer with one word or phrase."
)


def class_answer(text: str) -> str:
    """An answer or class name in the form they are compared in."""
    return normalize_answer(text.replace("_", " "))


class SceneClassificationByGeneration(Evaluation):
    """The generator names each test image's scene class; accuracy of the normalized answer.

    Args:
        question: the prompt, with ``{classes}`` for the comma-separated class names (the
            ``<image>`` token is put in front).
    """

    protocol = "scene_generation"
    requires = (Generation,)
    hint = "use KNN or LinearProbe for its vision tower"

    def __init__(
        self, data: LightningDataModule, question: str = DEFAULT_SCENE_QUESTION, **kwargs: Any
    ) -> None:
        super().__init__(data, **kwargs)
        if "{classes}" not in question:
            raise ValueError(f"{self.name}: question must contain '{{classes}}', got {question!r}")
        self.question = question

    @torch.no_grad()
    def run(self, ctx: Context) -> dict[str, float]:
        model, dm = ctx.model, self.data
        classes = [str(c) for c in dm.class_names]
        k = num_classes(dm)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"{self.name}: {type(model).__name__} has no tokenizer to prompt with")
        text = f"{IMAGE_TOKEN}\n" + self.question.format(classes=", ".join(classes))
        fmt = getattr(model, "conversation", None)
        prompt = torch.tensor(generation_prompt(tokenizer, text, fmt), device=ctx.device)
        targets = [class_answer(c) for c in classes]
        hits = torch.zeros(k, dtype=torch.long)
        totals = torch.zeros(k, dtype=torch.long)
        for batch in ctx.batches(dm, "test", "scene generation"):
            image = batch["image"]
            ids = prompt.expand(len(image), -1)
            answers = model.generate(image, ids, torch.ones_like(ids))
            labels = batch["label"].cpu().tolist()
            for answer, label in zip(answers, labels, strict=True):
                totals[label] += 1
                hits[label] += int(class_answer(answer) == targets[label])
        if int(totals.sum()) == 0:
            raise ValueError(f"{self.name}: the test split has no images")
        seen = totals > 0
        return {
            "generation_acc": float(hits.sum() / totals.sum()),
            "generation_mean_per_class": float((hits[seen] / totals[seen]).mean()),
        }
