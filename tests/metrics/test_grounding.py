"""Grounding accuracy of boxes written as text (VRSBench's {<x1><y1><x2><y2>}), and the VQA judge."""

from __future__ import annotations

import pytest
import torch

from zoo.metrics.generation import GenerationMetrics
from zoo.metrics.grounding import GroundingAccuracy, box_iou_xyxy, parse_box
from zoo.metrics.vqa import VQAAccuracy, exact_match


def test_parse_box_formats():
    assert parse_box("the ship {<10><20><30><40>} left") == (10, 20, 30, 40)
    assert parse_box("[30, 40, 10, 20] and {<1><1><2><2>}") == (10, 20, 30, 40)  # first, ordered
    assert parse_box("no box here") is None


def test_accuracy_at_thresholds_matches_a_loop():
    refs = ["{<0><0><10><10>}", "{<0><0><10><10>}", "{<0><0><10><10>}", "{<50><50><60><60>}"]
    answers = ["{<0><0><10><10>}", "{<0><0><10><6>}", "{<5><5><15><15>}", "nothing"]
    metric = GroundingAccuracy()
    metric.update(answers, refs)
    ious = []
    for a, r in zip(answers, refs, strict=True):
        p = parse_box(a) or (0, 0, 0, 0)
        ious.append(
            float(
                box_iou_xyxy(
                    torch.tensor([p], dtype=torch.float64),
                    torch.tensor([parse_box(r)], dtype=torch.float64),
                )[0]
            )
        )
    assert ious[:3] == pytest.approx([1.0, 0.6, 25 / 175])
    out = metric.compute()
    assert float(out["Acc@0.5"]) == pytest.approx(sum(i >= 0.5 for i in ious) / 4)
    assert float(out["Acc@0.7"]) == pytest.approx(sum(i >= 0.7 for i in ious) / 4)
    with pytest.raises(ValueError, match="holds no box"):
        metric.update(["{<0><0><1><1>}"], ["a ship"])


def test_judge_is_pluggable_and_reported_beside_exact_match():
    def lenient(question: str, prediction: str, reference: str) -> bool:
        return reference.lower() in prediction.lower()

    metrics = GenerationMetrics(judge=lenient, grounding_tasks=["referring"], meteor=False)
    batch = {
        "task": ["vqa", "vqa", "referring"],
        "question": ["is there a ship?", "how many?", "where?"],
        "reference": ["yes", "2", "{<0><0><10><10>}"],
        "question_type": ["", "", ""],
    }
    metrics.update(batch, ["yes, there is", "2", "{<0><0><10><10>}"])
    out = metrics.compute()
    assert float(out["vqa_accuracy"]) == 0.5  # exact match: "yes, there is" != "yes"
    assert float(out["vqa_judged_accuracy"]) == 1.0
    assert float(out["grounding_Acc@0.5"]) == 1.0
    judged = VQAAccuracy(judge=exact_match)
    with pytest.raises(ValueError, match="needs one question per answer"):
        judged.update(["yes"], ["yes"])
