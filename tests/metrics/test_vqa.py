"""Tests for zoo.metrics.vqa: answer normalization and per-question-type accuracy."""

from __future__ import annotations

import pytest
import torch

from zoo.metrics import VQAAccuracy, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two.", "2"),
        ("The red car", "red car"),
        ("Yes!", "yes"),
        ("3.5", "3.5"),
        ("twenty", "20"),
        ("  An   AIRPLANE  ", "airplane"),
        ("zero", "0"),
        ("nineteen", "19"),
        ("ninety", "90"),
        ("twenty-one", "21"),
        ("thirty two buildings", "32 buildings"),
        ("1,000", "1000"),
        ("It is 3.5.", "it is 3.5"),
        ("0.5 m2", "0.5 m2"),
        ("don't know", "don't know"),
        ("It’s the dog's", "it's dog's"),
        ("black-and-white", "black and white"),
        ('"rural"', "rural"),
        ("between 10 and 100m2", "between 10 and 100m2"),
        ("a", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


TYPES = ["presence", "comparison", "count", "area"]
# (prediction, answer, type, correct after normalization)
SAMPLES = [
    ("Yes", "yes", "presence", True),
    ("no.", "No", "presence", True),
    ("yes", "no", "presence", False),
    ("True", "false", "comparison", False),
    ("the same", "same", "comparison", True),
    ("Two.", "2", "count", True),
    ("three", "4", "count", False),
    ("twenty one", "21", "count", True),
    ("10", "ten", "count", True),
]
# No "area" sample: that type must be absent from the results.
EXPECTED = {
    "accuracy": 6 / 9,
    "accuracy_presence": 2 / 3,
    "accuracy_comparison": 1 / 2,
    "accuracy_count": 3 / 4,
}


def _columns(samples: list[tuple[str, str, str, bool]]) -> tuple[list[str], ...]:
    return tuple(list(col) for col in zip(*samples, strict=True))[:3]


def _assert_results(result: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    assert result.keys() == expected.keys()
    for key, val in expected.items():
        assert result[key].item() == pytest.approx(val), key


def test_hand_made_set_matches_normalized_exact_match() -> None:
    for pred, answer, _, correct in SAMPLES:
        assert (normalize_answer(pred) == normalize_answer(answer)) is correct, (pred, answer)


def test_per_type_accuracy() -> None:
    metric = VQAAccuracy(question_types=TYPES)
    metric.update(*_columns(SAMPLES))
    result = metric.compute()
    _assert_results(result, EXPECTED)
    assert all(v.dtype == torch.float32 for v in result.values())


def test_multiple_updates_equal_one() -> None:
    metric = VQAAccuracy(question_types=TYPES)
    for part in (SAMPLES[:2], SAMPLES[2:5], [], SAMPLES[5:]):
        preds, answers, types = _columns(part) if part else ([], [], [])
        metric.update(preds, answers, types)
    _assert_results(metric.compute(), EXPECTED)
    metric.reset()
    metric.update(["yes"], ["no"], ["area"])
    _assert_results(metric.compute(), {"accuracy": 0.0, "accuracy_area": 0.0})


def test_without_types_only_overall() -> None:
    preds, answers, types = _columns(SAMPLES)
    metric = VQAAccuracy()
    metric.update(preds, answers)
    _assert_results(metric.compute(), {"accuracy": 6 / 9})
    with pytest.raises(ValueError, match=r"Unknown question type\(s\) \['count'\]"):
        metric.update(["2"], ["2"], ["count"])
    # A batch without types on a typed metric counts towards the overall accuracy only.
    typed = VQAAccuracy(question_types=TYPES)
    typed.update(preds[:3], answers[:3], types[:3])
    typed.update(preds[3:], answers[3:])
    _assert_results(typed.compute(), {"accuracy": 6 / 9, "accuracy_presence": 2 / 3})


def test_unknown_type_raises_and_leaves_state_untouched() -> None:
    metric = VQAAccuracy(question_types=TYPES)
    with pytest.raises(ValueError, match=r"\['rural_urban'\].*known types: \['presence'"):
        metric.update(["yes", "no"], ["yes", "no"], ["presence", "rural_urban"])
    assert metric.total.item() == 0
    assert metric.total_per_type.sum().item() == 0


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_invalid_inputs_raise() -> None:
    with pytest.raises(ValueError, match="duplicates"):
        VQAAccuracy(question_types=["count", "count"])
    with pytest.raises(TypeError):
        VQAAccuracy(question_types="count")
    metric = VQAAccuracy(question_types=TYPES)
    with pytest.raises(ValueError, match="2 predictions but 1 answers"):
        metric.update(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="one type per sample"):
        metric.update(["a", "b"], ["a", "b"], ["count"])
    with pytest.raises(ValueError, match="no samples"):
        metric.compute()


# --------------------------------------------------------------------------------------------
# DDP: 2 gloo processes with uneven halves == single process on all data
# --------------------------------------------------------------------------------------------

_SPLIT = 5  # rank 0 gets samples 0-4 (in two updates), rank 1 samples 5-8


def _ddp_run(rank: int | None) -> dict[str, torch.Tensor]:
    metric = VQAAccuracy(question_types=TYPES)
    parts = {None: [SAMPLES], 0: [SAMPLES[:2], SAMPLES[2:_SPLIT]], 1: [SAMPLES[_SPLIT:]]}[rank]
    for part in parts:
        metric.update(*_columns(part))
    return metric.compute()


def test_ddp_gather_matches_single_process(on_two_ranks) -> None:
    ranks = on_two_ranks(_ddp_run)
    single = _ddp_run(None)
    _assert_results(single, EXPECTED)
    for ddp in ranks:
        assert ddp.keys() == single.keys()
        for key in single:
            torch.testing.assert_close(ddp[key], single[key], msg=key)
