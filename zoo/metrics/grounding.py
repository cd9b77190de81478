"""Visual grounding scored from text: boxes written in the answers, accuracy at IoU thresholds.

VRSBench (and GeoChat) write a box as ``{<x1><y1><x2><y2>}`` with integer corners on a 0-100
scale of the image; plain ``[x1, y1, x2, y2]`` lists are read too. :class:`GroundingAccuracy`
takes the first box of each answer and of its reference and counts the answers whose box has an
IoU of at least each threshold with the reference's (``Acc@0.5``, ``Acc@0.7``: the paper's
Table VIII). An answer without a box is a miss; a reference without one is an error that names it.
Sum states (``dist_reduce_fx="sum"``) make it exact under DDP.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["GroundingAccuracy", "box_iou_xyxy", "parse_box"]

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BRACED = re.compile(r"\{" + r"<" + r">\s*<".join([_NUMBER] * 4) + r">\}")
_LISTED = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first box written in a text.

    Args:
        text: An answer or reference: ``{<x1><y1><x2><y2>}`` or ``[x1, y1, x2, y2]``.

    Returns:
        The first box ``(x1, y1, x2, y2)``, corners ordered, or None when the text has none.
    """
    found = [m for m in (_BRACED.search(text), _LISTED.search(text)) if m is not None]
    if not found:
        return None
    first = min(found, key=lambda m: m.start())
    x1, y1, x2, y2 = (float(v) for v in first.groups())
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_iou_xyxy(a: Tensor, b: Tensor) -> Tensor:
    """IoU of paired boxes.

    Args:
        a: Boxes ``N×4`` (x1, y1, x2, y2).
        b: Boxes ``N×4``, paired with ``a`` row by row.

    Returns:
        The IoU of every pair, ``(N,)``.
    """
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=1)
    area = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(dim=1) + (b[:, 2:] - b[:, :2]).clamp_min(0).prod(
        dim=1
    )
    return inter / (area - inter).clamp_min(1e-9)


class GroundingAccuracy(Metric):
    """Accuracy of boxes written as text at IoU thresholds (see the module docstring).

    Args:
        thresholds: IoU thresholds, reported as ``Acc@<t>``.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    hits: Tensor
    count: Tensor

    def __init__(self, thresholds: Sequence[float] = (0.5, 0.7), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thresholds = [float(t) for t in thresholds]
        self.add_state(
            "hits", torch.zeros(len(self.thresholds), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, answers: Sequence[str], references: Sequence[str]) -> None:
        """Score each answer's first box against its reference's.

        Args:
            answers: The generated answers (an answer without a box is a miss).
            references: The reference answers, one per answer, each with a box.

        Raises:
            ValueError: If the counts differ or a reference holds no box.
        """
        if len(answers) != len(references):
            raise ValueError(f"got {len(answers)} answers for {len(references)} references")
        pairs = []
        for answer, reference in zip(answers, references, strict=True):
            truth = parse_box(reference)
            if truth is None:
                raise ValueError(
                    f"the reference {reference!r} holds no box ({{<x1><y1><x2><y2>}} or [x1, y1, "
                    "x2, y2]): is this a grounding split?"
                )
            pred = parse_box(answer)
            pairs.append((pred or (0.0, 0.0, 0.0, 0.0), truth))  # no box: IoU 0
        if pairs:
            pred = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
            truth = torch.tensor([t for _, t in pairs], dtype=torch.float64)
            iou = box_iou_xyxy(pred, truth)
            thresholds = torch.tensor(self.thresholds, dtype=torch.float64)
            self.hits += (iou[:, None] >= thresholds).sum(0).to(self.hits)
            self.count += len(pairs)

    def compute(self) -> dict[str, Tensor]:
        """The accuracies at every threshold.

        Returns:
            ``Acc@<t>`` for every threshold ``t`` (NaN before any answer).
        """
        acc = torch.where(self.count > 0, self.hits / self.count.clamp_min(1), float("nan"))
        return {f"Acc@{t:g}": v.float() for t, v in zip(self.thresholds, acc, strict=True)}
