"""Frozen-feature probes on hand-made features whose answers are known."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.evaluation import (
    fit_logistic_regression,
    knn_accuracy,
    linear_probe,
    stratified_split,
    zero_shot_accuracy,
)


def _unit(degrees: float) -> list[float]:
    rad = math.radians(degrees)
    return [math.cos(rad), math.sin(rad)]


# ------------------------------------------------------------------------------------- k-NN
def test_knn_k1_and_k20_differ_as_hand_computed() -> None:
    """One class-0 point at 0°, twenty class-1 points at 10°.

    Query at 0° (label 0): k=1 -> the 0° point -> class 0 (right). k=20 -> votes
    exp(1/0.07) for class 0 against 19 * exp(cos 10°/0.07) = 19 * 0.805 * exp(1/0.07) for class 1
    -> class 1 (wrong). Query at 10° (label 1): class 1 either way. Accuracy 1.0 vs 0.5.
    """
    train = torch.tensor([_unit(0.0)] + [_unit(10.0)] * 20)
    train_labels = torch.tensor([0] + [1] * 20)
    test = torch.tensor([_unit(0.0), _unit(10.0)])
    test_labels = torch.tensor([0, 1])
    assert knn_accuracy(train, train_labels, test, test_labels, 2, k=1) == 1.0
    assert knn_accuracy(train, train_labels, test, test_labels, 2, k=20) == 0.5


def test_knn_temperature_weighting() -> None:
    """k=3: a class-0 neighbour at 0° and two class-1 neighbours at 60° of a query at 0°.

    T=0.07: class 0 gets exp(1/T), class 1 gets 2 exp(0.5/T) = 2 exp(-7.1) exp(1/T) -> class 0.
    T=100 (nearly uniform votes): 1 against 2 * exp(-0.005) = 1.99 -> class 1.
    """
    train = torch.tensor([_unit(0.0), _unit(60.0), _unit(-60.0)])
    labels = torch.tensor([0, 1, 1])
    query, truth = torch.tensor([_unit(0.0)]), torch.tensor([0])
    assert knn_accuracy(train, labels, query, truth, 2, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(train, labels, query, truth, 2, k=3, temperature=100.0) == 0.0


def test_knn_bad_labels_named() -> None:
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="train_labels must lie in"):
        knn_accuracy(x, torch.tensor([0, 1, 2, 3]), x, torch.zeros(4, dtype=torch.long), 3, k=1)
    with pytest.raises(ValueError, match="test_labels must be an integer"):
        knn_accuracy(x, torch.zeros(4, dtype=torch.long), x, torch.zeros(4), 3, k=1)


# ------------------------------------------------------------------------------------- zero-shot
def test_zero_shot_known_predictions() -> None:
    """Identity class embeddings: an image's ranking of the 7 classes is its score vector's."""
    classes = torch.eye(7)
    down = torch.arange(7, 0, -1, dtype=torch.float)  # class 0 first ... class 6 last
    images = torch.stack([down, down, down, down.flip(0)])
    labels = torch.tensor([0, 3, 6, 6])  # rank 1, 4, 7, 1
    out = zero_shot_accuracy(images, classes, labels)
    assert out["top1"] == pytest.approx(0.5)
    assert out["top5"] == pytest.approx(0.75)
    # classes 0: 1/1, 3: 0/1, 6: 1/2
    assert out["mean_per_class"] == pytest.approx(0.5)


def test_zero_shot_template_averaging_changes_the_answer() -> None:
    """First templates alone: class 0 (cos 0.9) beats class 1 (cos 0.8). Averaged templates:
    class 0 -> (0.45, 0.218, 0.5) has cos 0.636, class 1 -> (0.8, 0, 0) has cos 1 -> class 1."""
    s = math.sqrt(1 - 0.81)
    templates = torch.tensor(
        [[[0.9, s, 0.0], [0.0, 0.0, 1.0]], [[0.8, -0.6, 0.0], [0.8, 0.6, 0.0]]]
    )
    image, label = torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1])
    assert zero_shot_accuracy(image, templates[:, 0], label)["top1"] == 0.0
    assert zero_shot_accuracy(image, templates, label)["top1"] == 1.0
    # one template per class ([C, 1, D]) is the same as [C, D]; no top5 with C <= 5
    out = zero_shot_accuracy(image, templates[:, :1], label)
    assert out == zero_shot_accuracy(image, templates[:, 0], label)
    assert "top5" not in out


def test_zero_shot_label_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        zero_shot_accuracy(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 3]))


# ------------------------------------------------------------------------------------- linear
def _blobs(n_per_class: int, centres: torch.Tensor, spread: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(n_per_class)
    features = centres[labels] + spread * torch.randn(len(labels), centres.shape[1], generator=g)
    return features, labels


def test_stratified_split_is_stratified_and_deterministic() -> None:
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [3])
    fit, val = stratified_split(labels, 0.2, seed=3)
    assert torch.bincount(labels[val], minlength=4).tolist() == [2, 1, 1, 0]
    assert sorted(fit.tolist() + val.tolist()) == list(range(len(labels)))
    again = stratified_split(labels, 0.2, seed=3)
    assert torch.equal(fit, again[0]) and torch.equal(val, again[1])


def test_linear_probe_separable_blobs() -> None:
    centres = 10 * torch.eye(3, 5)
    x, y = _blobs(30, centres, 1.0, seed=0)
    x_test, y_test = _blobs(10, centres, 1.0, seed=1)
    out = linear_probe(x, y, x_test, y_test, 3)
    assert out["accuracy"] == 1.0
    assert out["val_accuracy"] == 1.0
    assert out["weight_decay"] in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def test_linear_probe_noise_labels_near_chance() -> None:
    g = torch.Generator().manual_seed(0)
    x, x_test = torch.randn(200, 8, generator=g), torch.randn(400, 8, generator=g)
    y, y_test = torch.randint(0, 4, (200,), generator=g), torch.randint(0, 4, (400,), generator=g)
    out = linear_probe(x, y, x_test, y_test, 4, weight_decays=(1e-3, 1e-1))
    assert abs(out["accuracy"] - 0.25) < 0.08, out


@pytest.mark.parametrize("num_classes", [3, 2])
def test_logistic_regression_matches_scikit_learn(num_classes: int) -> None:
    """Same standardized data, our weight decay wd <-> sklearn C = 1/(n wd) (three or more
    classes) or 2/(n wd) (two classes, sklearn's single weight vector): same probabilities."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    centres = 1.5 * torch.randn(num_classes, 6, generator=torch.Generator().manual_seed(0))
    x, y = _blobs(40, centres, 1.0, seed=2)  # overlapping: the L2 strength matters
    x_test, y_test = _blobs(40, centres, 1.0, seed=3)
    mean, std = x.mean(0), x.std(0, unbiased=False)
    xs, xs_test = ((x - mean) / std).double(), ((x_test - mean) / std).double()
    n, wd = len(x), 0.05
    weight, bias = fit_logistic_regression(xs, y, num_classes, wd)
    ours = torch.softmax(xs_test @ weight.T + bias, dim=1)

    c = (1.0 if num_classes > 2 else 2.0) / (n * wd)
    reference = sklearn.LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(xs, y)
    theirs = torch.from_numpy(reference.predict_proba(xs_test.numpy()))
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()

    probe = linear_probe(x, y, x_test, y_test, num_classes, weight_decays=(wd,))
    expected = float((reference.predict(xs_test.numpy()) == y_test.numpy()).mean())
    assert probe["accuracy"] == pytest.approx(expected)
    assert probe["weight_decay"] == wd and math.isnan(probe["val_accuracy"])


def test_linear_probe_selection_is_deterministic_and_in_grid() -> None:
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    x, y = _blobs(15, centres, 1.5, seed=4)
    x_test, y_test = _blobs(15, centres, 1.5, seed=5)
    grid = (1e-4, 1e-2, 1.0)
    first = linear_probe(x, y, x_test, y_test, 4, weight_decays=grid, seed=7)
    assert first == linear_probe(x, y, x_test, y_test, 4, weight_decays=grid, seed=7)
    assert first["weight_decay"] in grid and 0.0 <= first["val_accuracy"] <= 1.0


def test_linear_probe_errors() -> None:
    x, y = torch.randn(6, 2), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="weight_decays"):
        linear_probe(x, y, x, y, 3, weight_decays=(0.0,))
    with pytest.raises(ValueError, match="test_features must have shape"):
        linear_probe(x, y, x[0], y, 3)
    with pytest.raises(ValueError, match="held-out slice is empty"):
        linear_probe(x[::2], y[::2], x, y, 3)
