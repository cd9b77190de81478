"""Tests for zoo.metrics.captioning against pycocoevalcap called directly, plus pinned values."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor

from zoo.metrics import CaptionMetrics, captioning
from zoo.metrics.captioning import CAPTION_METRIC_KEYS, java_available, simple_tokenize

requires_java = pytest.mark.skipif(not java_available(), reason="needs Java for PTB and METEOR")

PREDICTIONS = [
    "Many buildings and green trees are around a playground.",
    "An airplane is parked at the airport.",
    "there is a river with a bridge over it",
    "Several storage tanks are next to the road.",
    "A dense residential area with many houses.",
]
REFERENCES = [
    [
        "There are many buildings and green trees around the playground.",
        "A playground is surrounded by buildings and trees.",
        "Some buildings and trees are around a playground with a red track.",
        "The playground is next to many buildings.",
        "Many green trees and buildings surround a playground.",
    ],
    ["An airplane is parked on the apron of the airport.", "A white plane is at the airport."],
    [
        "A bridge crosses a wide river.",
        "There is a bridge over the river.",
        "The river, which is green, is crossed by a long bridge.",
    ],
    ["Four white storage tanks are beside the road."],
    [
        "Many houses are densely arranged in the residential area.",
        "A dense residential area with lots of buildings and trees.",
        "Houses are arranged densely.",
        "There are many houses in this dense residential area.",
    ],
]

#: Observed with pycocoevalcap 1.2 (Stanford CoreNLP 3.4.1 PTBTokenizer, METEOR 1.5) on the set
#: above; a change means the metric or the toolkit changed.
PINNED = {
    "BLEU-1": 0.875000,
    "BLEU-2": 0.790569,
    "BLEU-3": 0.678604,
    "BLEU-4": 0.543879,
    "METEOR": 0.382338,
    "ROUGE-L": 0.649707,
    "CIDEr": 2.791648,
}


def as_floats(result: dict[str, Tensor]) -> dict[str, float]:
    return {key: val.item() for key, val in result.items()}


def assert_scores_close(actual: dict[str, float], expected: dict[str, float], tol: float) -> None:
    assert actual.keys() == expected.keys()
    for key, val in expected.items():
        assert actual[key] == pytest.approx(val, abs=tol), key


@pytest.fixture(scope="module")
def direct_scores() -> dict[str, float]:
    """The scores from pycocoevalcap's own classes, tokenized as COCOEvalCap does."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if not java_available():
        pytest.skip("needs Java for PTB and METEOR")
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize(
        {i: [{"caption": r} for r in refs] for i, refs in enumerate(REFERENCES)}
    )
    res = tokenizer.tokenize({i: [{"caption": p}] for i, p in enumerate(PREDICTIONS)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    # The METEOR JVM takes several seconds to start: reuse the process the metric shares.
    meteor = captioning._get_meteor()
    assert isinstance(meteor, Meteor)
    scores = {f"BLEU-{n}": float(v) for n, v in enumerate(bleu, start=1)}
    scores["METEOR"] = float(meteor.compute_score(gts, res)[0])
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return scores


@requires_java
def test_matches_pycocoevalcap_and_pinned_values(direct_scores: dict[str, float]) -> None:
    metric = CaptionMetrics()
    metric.update(PREDICTIONS, REFERENCES)
    result = metric.compute()
    assert tuple(result) == CAPTION_METRIC_KEYS
    assert all(val.dtype == torch.float32 and val.ndim == 0 for val in result.values())
    scores = as_floats(result)
    assert_scores_close(scores, direct_scores, tol=1e-6)
    assert_scores_close(scores, PINNED, tol=1e-4)


@requires_java
def test_identical_captions_score_perfectly() -> None:
    metric = CaptionMetrics()
    metric.update([refs[0] for refs in REFERENCES], [[refs[0]] for refs in REFERENCES])
    scores = as_floats(metric.compute())
    for n in range(1, 5):
        assert scores[f"BLEU-{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(1.0)
    assert scores["METEOR"] > 0.9
    assert scores["CIDEr"] > 0.0


@requires_java
def test_several_updates_equal_one_update() -> None:
    one = CaptionMetrics()
    one.update(PREDICTIONS, REFERENCES)
    several = CaptionMetrics()
    for part in (slice(0, 2), slice(2, 3), slice(3, 3), slice(3, 5)):  # includes an empty batch
        several.update(PREDICTIONS[part], REFERENCES[part])
    assert several.samples() == (PREDICTIONS, REFERENCES)
    assert as_floats(several.compute()) == as_floats(one.compute())


def test_state_round_trips_unicode_and_whitespace() -> None:
    preds = ["café près du lac", "", "a\nb  c"]
    refs = [["naïve Δ ünïcode", "second ref"], ["only one"], ["x\r\ny", "", "z"]]
    metric = CaptionMetrics()
    metric.update(preds, refs)
    assert metric.samples() == (preds, refs)
    assert metric.text_bytes[0].dtype == torch.uint8
    assert metric.num_refs[0].tolist() == [2, 1, 3]


@requires_java
def test_odd_captions_are_scored() -> None:
    """Empty captions and embedded line breaks keep the tokenizer aligned with the samples."""
    metric = CaptionMetrics(meteor=False)
    metric.update(["", "a plane\r\nat the airport"], [["a plane"], ["a plane at\nthe airport"]])
    scores = as_floats(metric.compute())
    assert scores["ROUGE-L"] == pytest.approx(0.5)  # 0 for the empty caption, 1 for the other


def test_simple_tokenize() -> None:
    assert simple_tokenize("A plane, parked at the airport.") == "a plane parked at the airport"
    assert (
        simple_tokenize("It's well-known: 3.5 m & 50% (ok)") == "it 's well-known 3.5 m & 50 % ok"
    )
    assert simple_tokenize("Don't stop...") == "do n't stop"


@requires_java
def test_simple_tokenize_agrees_with_ptb_on_fixture() -> None:
    samples = [[p, *refs] for p, refs in zip(PREDICTIONS, REFERENCES, strict=True)]
    expected = captioning._ptb_tokenize(samples)
    assert [[simple_tokenize(c) for c in caps] for caps in samples] == expected


def test_without_java_skips_meteor_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(captioning, "java_available", lambda: False)
    metric = CaptionMetrics()
    metric.update(PREDICTIONS, REFERENCES)
    with pytest.warns(RuntimeWarning, match="METEOR is skipped"):
        result = metric.compute()
    assert "METEOR" not in result
    assert set(result) == set(CAPTION_METRIC_KEYS) - {"METEOR"}
    assert 0.0 < result["BLEU-1"].item() <= 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric.compute()  # warned once per metric already
    if java_available():  # the fallback tokenizes this set exactly like PTB
        scores = as_floats(result)
        assert_scores_close(scores, {k: v for k, v in PINNED.items() if k != "METEOR"}, 1e-4)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_empty_state_raises() -> None:
    with pytest.raises(ValueError, match="no samples"):
        CaptionMetrics().compute()


def test_invalid_inputs_raise() -> None:
    metric = CaptionMetrics()
    with pytest.raises(ValueError, match="one entry per sample"):
        metric.update(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="one entry per sample"):
        metric.update("a caption", [["a"]])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty list"):
        metric.update(["a"], [[]])
    with pytest.raises(ValueError, match="non-empty list"):
        metric.update(["a"], ["a reference, not a list"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="strings"):
        metric.update([None], [["a"]])  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------
# DDP: 2 gloo processes with uneven halves == single process on all data
# --------------------------------------------------------------------------------------------

# Per rank, the sample slices of each update; rank None is the single-process run.
_LAYOUTS: dict[str, dict[int | None, list[slice]]] = {
    # rank 0 gets samples 0-2 in two updates, rank 1 samples 3-4 (uneven gather)
    "uneven": {None: [slice(0, 5)], 0: [slice(0, 1), slice(1, 3)], 1: [slice(3, 5)]},
    # rank 1 never updates: it must still take part in the gather with typed empty states
    "empty_rank": {None: [slice(0, 5)], 0: [slice(0, 5)], 1: []},
}


def _ddp_run(
    rank: int | None, layout: str
) -> tuple[dict[str, float], tuple[list[str], list[list[str]]]]:
    """Scores and decoded samples on this rank's part (``rank=None``: all data, no DDP)."""
    # METEOR is left out: its JVM start would dominate the test, and it scores the same gathered
    # samples as the other metrics.
    metric = CaptionMetrics(meteor=False)
    for part in _LAYOUTS[layout][rank]:
        metric.update(PREDICTIONS[part], REFERENCES[part])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The ``compute`` method of metric")  # the empty rank
        scores = as_floats(metric.compute())
    with metric.sync_context():  # gathered state on every rank; a no-op without DDP
        samples = metric.samples()
    return scores, samples


@requires_java
@pytest.mark.parametrize("layout", list(_LAYOUTS))
def test_ddp_gather_matches_single_process(on_two_ranks, layout: str) -> None:
    ranks = on_two_ranks(_ddp_run, layout)
    single_scores, single_samples = _ddp_run(None, layout)
    assert single_samples == (PREDICTIONS, REFERENCES)
    assert "METEOR" not in single_scores
    for scores, samples in ranks:
        assert samples == single_samples
        assert_scores_close(scores, single_scores, tol=1e-7)
