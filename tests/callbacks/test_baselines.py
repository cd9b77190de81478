"""The end-of-fit table's baselines, each against a hand computation on a tiny split, and the
table's columns (final, best, untrained, baseline)."""

from __future__ import annotations

import pytest
import torch

from zoo.callbacks.baselines import (
    Baseline,
    chance_baselines,
    majority_answers,
    majority_vqa_baselines,
    validation_baselines,
    whole_image_baselines,
)
from zoo.callbacks.summary import format_summary
from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits


@pytest.fixture(scope="module")
def dm(tmp_path_factory) -> EmbeddedConversationDataModule:
    """Embedded conversations of 24 training and 8 validation images, batches of 4."""
    root = tmp_path_factory.mktemp("baselines") / "embedded"
    data = EmbeddedConversationDataModule(
        str(root), splits=EmbeddedSplits(24, 8, 8), batch_size=4, tasks=["caption", "vqa"]
    )
    data.prepare_data()
    data.setup("fit")
    return data


def _vqa(answers: list[tuple[str, str]]) -> dict:
    """One multi-turn training record: (question type, answer) per turn."""
    turns = []
    for _, answer in answers:
        turns += [{"from": "human", "value": "q?"}, {"from": "gpt", "value": answer}]
    return {"task": "vqa", "conversations": turns, "question_types": [t for t, _ in answers]}


def _question(qtype: str, answer: str) -> dict:
    """One single-turn validation record."""
    return _vqa([(qtype, answer)])


def test_majority_answer_scored_on_the_validation_questions():
    train = [
        _vqa([("count", "2"), ("presence", "yes")]),
        _vqa([("count", "Two."), ("presence", "no")]),  # normalized: "2" twice
        _vqa([("count", "3"), ("presence", "yes")]),
        {"task": "caption", "conversations": [], "question_types": []},
    ]
    assert majority_answers(train) == {"count": "2", "presence": "yes", "": "2"}
    val = [
        _question("count", "two"),  # hit ("two" -> "2")
        _question("count", "3"),  # miss
        _question("presence", "yes"),  # hit
        _question("presence", "no"),  # miss
        _question("colour", "red"),  # an unseen type: the overall majority "2" misses
        {"task": "caption", "conversations": [{}, {"value": "a lake"}], "question_types": []},
    ]
    out = majority_vqa_baselines(train, val, ["count", "presence", "colour"])
    assert out["vqa_accuracy"] == Baseline(pytest.approx(2 / 5), "majority answer")
    assert out["vqa_accuracy_count"].value == pytest.approx(1 / 2)
    assert out["vqa_accuracy_presence"].value == pytest.approx(1 / 2)
    assert out["vqa_accuracy_colour"].value == 0.0
    assert majority_vqa_baselines(train, val[-1:]) == {}  # no question to score


def test_whole_image_mask_and_chance():
    a = torch.zeros(1, 4, 4)
    a[0, :1, :2] = 1  # 2 of 16 pixels: IoU 2/16 against the whole image
    b = torch.zeros(2, 4, 4)
    b[0, :2] = 1  # 8 of 16: IoU 1/2
    b[1, :, :3] = 1  # 12 of 16: IoU 3/4
    out = whole_image_baselines([a, b, torch.zeros(0, 4, 4)])
    assert out["mIoU"] == Baseline(pytest.approx((2 / 16 + 1 / 2 + 3 / 4) / 3), "whole-image mask")
    assert out["cIoU"].value == pytest.approx((2 + 8 + 12) / 48)
    assert whole_image_baselines([]) == {}
    chance = chance_baselines(num_samples=8, num_classes=10)
    assert chance["zero_shot_acc"] == chance["knn_acc"] == Baseline(0.1, "chance")
    assert chance["image_to_text_R@1"].value == chance["text_to_image_R@1"].value == 1 / 8
    assert chance["location_to_image_R@5"].value == 5 / 8
    assert chance["image_to_location_R@10"].value == 1.0


def test_validation_baselines_of_the_embedded_conversations(dm):
    """The datamodule's own splits: the first validation batch's questions scored with the
    training split's majority answer per question type, as computed by hand here."""
    from collections import Counter, defaultdict

    from zoo.metrics.vqa import normalize_answer

    counts: dict[str, Counter] = defaultdict(Counter)
    for record in dm.train_dataset.records:
        for k, qtype in enumerate(record.get("question_types") or []):
            counts[qtype][normalize_answer(record["conversations"][2 * k + 1]["value"])] += 1
    scored = [r for r in dm.val_dataset.records[: dm.batch_size] if r["task"] == "vqa"]
    assert scored, "the first validation batch holds questions"
    hits = [
        counts[r["question_types"][0]].most_common(1)[0][0]
        == normalize_answer(r["conversations"][1]["value"])
        for r in scored
    ]
    out = validation_baselines(dm, num_batches=1)
    assert out["vqa_accuracy"].value == pytest.approx(sum(hits) / len(hits))
    whole = validation_baselines(dm)  # every validation batch
    assert whole["vqa_accuracy"].name == "majority answer"


def test_the_table_has_final_untrained_and_baseline_columns():
    history = {
        "val_vqa_accuracy": [(0, 10, 0.2), (1, 20, 0.5), (2, 30, 0.4)],
        "val_loss": [(0, 10, 3.0), (1, 20, 2.0)],
    }
    table = format_summary(
        history,
        untrained={"val_vqa_accuracy": 0.0, "val_loss": 5.5},
        baselines={"vqa_accuracy": Baseline(0.28, "majority answer")},
    )
    lines = table.splitlines()
    assert lines[0] == "| metric | final | best | best at | untrained | baseline |"
    assert (
        "| val_vqa_accuracy | 0.4 | 0.5 | epoch 1, step 20 | 0 | 0.28 (majority answer) |" in lines
    )
    assert "| val_loss | 2 | 2 | epoch 1, step 20 | 5.5 | — |" in lines
    bare = format_summary(history)  # nothing known before training: dashes, not zeros
    assert "| val_loss | 2 | 2 | epoch 1, step 20 | — | — |" in bare.splitlines()


def test_validation_baselines_of_the_embedded_referring_masks(tmp_path_factory):
    """Every validation batch's real targets against a whole-image mask, by hand here; the
    generated batches of a generator do not cut the masks (all batches are scored)."""
    from zoo.data import EmbeddedReferringDataModule

    refs = EmbeddedReferringDataModule(
        str(tmp_path_factory.mktemp("refs") / "embedded"),
        splits=EmbeddedSplits(8, 8, 4),
        batch_size=4,
    )
    refs.prepare_data()
    refs.setup("fit")
    ious = []
    for batch in refs.val_dataloader():
        for mask in batch["mask"][batch["mask_valid"].bool()]:
            ious.append(float((mask > 0.5).sum()) / mask.numel())
    out = validation_baselines(refs, num_batches=None, generated_batches=1)
    assert out["mIoU"] == Baseline(pytest.approx(sum(ious) / len(ious)), "whole-image mask")
