"""The generators' evaluation: captioning metrics on caption tasks, VQA accuracy on questions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from zoo.metrics.captioning import CaptionMetrics
from zoo.metrics.grounding import GroundingAccuracy
from zoo.metrics.vqa import Judge, VQAAccuracy

__all__ = ["GenerationMetrics"]


class GenerationMetrics(nn.Module):
    """Route each generated answer by its sample's ``task``: caption tasks to
    :class:`CaptionMetrics` (BLEU, METEOR, ROUGE-L, CIDEr against all of the sample's
    ``references`` when the batch has them, as caption benchmarks score against five
    references, else against ``reference``), everything else to :class:`VQAAccuracy` per
    ``question_type``; grounding tasks (when named) to :class:`GroundingAccuracy` (boxes written
    as text, ``grounding_Acc@0.5`` ...). With a ``judge`` the VQA answers are also judged by it
    (``vqa_judged_accuracy`` ..., beside the exact-match ``vqa_accuracy``).

    Args:
        question_types: VQA question types reported separately ('' counts only overall).
        caption_tasks: the task names scored as captions.
        meteor: compute METEOR (needs Java; skipped with a warning without it).
        grounding_tasks: the task names scored as boxes (none by default).
        judge: a VQA judge ``(question, prediction, reference) -> bool`` (e.g. an LLM's).
    """

    def __init__(
        self,
        question_types: Sequence[str] = (),
        caption_tasks: Sequence[str] = ("caption", "description"),
        meteor: bool = True,
        grounding_tasks: Sequence[str] = (),
        judge: Judge | None = None,
    ) -> None:
        super().__init__()
        self.question_types = list(question_types)
        self.caption_tasks = set(caption_tasks)
        self.grounding_tasks = set(grounding_tasks)
        self.caption = CaptionMetrics(meteor=meteor)
        self.vqa = VQAAccuracy(question_types=self.question_types or None)
        self.judged = VQAAccuracy(self.question_types or None, judge=judge) if judge else None
        self.grounding = GroundingAccuracy()

    def update(self, batch: dict[str, Any], answers: list[str]) -> None:
        """Score a batch's generated answers, each by its sample's task.

        Args:
            batch: The batch the answers were generated for: ``reference`` (and
                ``references`` for captions, ``question`` with a judge), and optionally
                ``task`` and ``question_type`` per sample.
            answers: The generated answer of every sample.
        """
        tasks = batch.get("task") or [""] * len(answers)
        types = batch.get("question_type") or [""] * len(answers)
        caption = [i for i, t in enumerate(tasks) if t in self.caption_tasks]
        if caption:
            references = batch.get("references")
            self.caption.update(
                [answers[i] for i in caption],
                [
                    list(references[i]) if references is not None else [batch["reference"][i]]
                    for i in caption
                ],
            )
        grounding = [i for i, t in enumerate(tasks) if t in self.grounding_tasks]
        if grounding:
            self.grounding.update(
                [answers[i] for i in grounding], [batch["reference"][i] for i in grounding]
            )
        vqa = [i for i, t in enumerate(tasks) if t not in self.caption_tasks | self.grounding_tasks]
        if vqa:
            known = set(self.question_types)
            args = (
                [answers[i] for i in vqa],
                [batch["reference"][i] for i in vqa],
                [types[i] for i in vqa] if known and all(types[i] in known for i in vqa) else None,
            )
            self.vqa.update(*args)
            if self.judged is not None:
                self.judged.update(*args, questions=[batch["question"][i] for i in vqa])

    def compute(self) -> dict[str, Tensor]:
        """Scores of the metrics that saw samples on any rank (every rank joins the same
        collectives, so a rank without captions does not leave the others waiting).

        Returns:
            The caption scores as :class:`CaptionMetrics` names them, the VQA accuracies
            prefixed ``vqa_`` (``vqa_judged_`` for the judge's) and the grounding accuracies
            prefixed ``grounding_``.
        """
        seen = torch.tensor(
            [self.caption.update_called, self.vqa.update_called, self.grounding.update_called],
            dtype=torch.long,
        )
        if dist.is_available() and dist.is_initialized():
            seen = seen.to(self.vqa.correct.device)
            dist.all_reduce(seen, op=dist.ReduceOp.MAX)
        out: dict[str, Tensor] = {}
        if seen[0]:
            out.update(self.caption.compute())
        if seen[1]:
            out.update({f"vqa_{k}": v for k, v in self.vqa.compute().items()})
            if self.judged is not None:
                out.update({f"vqa_judged_{k}": v for k, v in self.judged.compute().items()})
        if seen[2]:
            out.update({f"grounding_{k}": v for k, v in self.grounding.compute().items()})
        return out

    def reset(self) -> None:
        """Forget every sample seen so far (all the metrics)."""
        self.caption.reset()
        self.vqa.reset()
        self.grounding.reset()
        if self.judged is not None:
            self.judged.reset()
