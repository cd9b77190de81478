"""Frozen-feature evaluation protocols on feature tensors: k-NN, zero-shot and linear probe.

Pure functions of tensors (no Lightning, no data): extract features once with any zoo encoder,
then score them the way the papers do.

* :func:`knn_accuracy` -- cosine k-NN with DINO's ``exp(sim / T)`` vote weighting (the k-NN
  numbers FLAVARS reports), on :func:`zoo.metrics.embedding.knn_predict`.
* :func:`zero_shot_accuracy` -- CLIP zero-shot classification against class (prompt) embeddings,
  with prompt-template ensembling, on :func:`zoo.metrics.embedding.zero_shot_logits`.
* :func:`linear_probe` -- CLIP's linear probe: L2-regularized multinomial logistic regression on
  standardized frozen features, the regularization strength chosen on a held-out slice of train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from zoo.metrics.embedding import knn_predict, zero_shot_logits

__all__ = [
    "DEFAULT_WEIGHT_DECAYS",
    "fit_logistic_regression",
    "knn_accuracy",
    "linear_probe",
    "stratified_split",
    "zero_shot_accuracy",
]

#: Default L2 grid of :func:`linear_probe` (per-sample units, on standardized features).
DEFAULT_WEIGHT_DECAYS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def _check_features(name: str, features: Tensor) -> None:
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"{name} must have shape N×D with N > 0, got {tuple(features.shape)}")


def _check_labels(name: str, labels: Tensor, n: int, num_classes: int | None = None) -> None:
    if labels.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}], got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {labels.dtype}")
    if num_classes is not None and labels.numel():
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in [{low}, {high}]"
            )


def _check_splits(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
) -> None:
    """Both splits' features ``N×D`` (of one width) and labels ``N`` in ``[0, num_classes)``."""
    _check_features("train_features", train_features)
    _check_features("test_features", test_features)
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"train_features and test_features differ in width: {train_features.shape[1]} and "
            f"{test_features.shape[1]}"
        )
    _check_labels("train_labels", train_labels, len(train_features), num_classes)
    _check_labels("test_labels", test_labels, len(test_features), num_classes)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Top-1 accuracy of weighted cosine k-NN on frozen features (DINO protocol).

    Every test feature takes its ``k`` most cosine-similar train features, each voting for its
    label with weight ``exp(sim / temperature)``; the class with the largest vote wins (ties to the
    lowest class index). Features are L2-normalized inside.

    Args:
        train_features: ``N×D`` reference features.
        train_labels: ``N`` integer labels in ``[0, num_classes)``.
        test_features: ``Q×D`` query features.
        test_labels: ``Q`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes.
        k: number of neighbours, in ``[1, N]``.
        temperature: temperature of the vote weights (0.07 as in DINO and FLAVARS).

    Returns:
        The fraction of test features whose predicted class is their label.
    """
    _check_splits(train_features, train_labels, test_features, test_labels, num_classes)
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    preds = knn_predict(
        test_features,
        train_features,
        train_labels.to(train_features.device),
        num_classes,
        k=k,
        temperature=temperature,
    )
    return (preds.cpu() == test_labels.cpu().long()).double().mean().item()


def zero_shot_accuracy(
    image_embeddings: Tensor, class_embeddings: Tensor, labels: Tensor
) -> dict[str, float]:
    """CLIP zero-shot classification: each image takes the class whose text embedding is closest.

    Args:
        image_embeddings: ``N×D`` image embeddings (normalized inside).
        class_embeddings: ``C×D`` class embeddings, or ``C×T×D`` for ``T`` prompt templates
            per class (each normalized, averaged and re-normalized: CLIP prompt ensembling).
        labels: ``N`` integer labels in ``[0, C)``.

    Returns:
        ``top1`` accuracy, ``top5`` accuracy when ``C > 5``, and ``mean_per_class`` (the top-1
        accuracy of each class present in ``labels``, averaged over those classes).
    """
    _check_features("image_embeddings", image_embeddings)
    num_classes = class_embeddings.shape[0] if class_embeddings.ndim >= 1 else 0
    _check_labels("labels", labels, len(image_embeddings), num_classes)
    logits = zero_shot_logits(image_embeddings, class_embeddings.to(image_embeddings.device))
    labels = labels.to(logits.device).long()
    correct = logits.argmax(dim=1) == labels
    out = {"top1": correct.double().mean().item()}
    if num_classes > 5:
        top5 = logits.topk(5, dim=1).indices
        out["top5"] = (top5 == labels[:, None]).any(dim=1).double().mean().item()
    hits = torch.zeros(num_classes, dtype=torch.float64, device=logits.device)
    hits.index_add_(0, labels, correct.double())
    counts = torch.bincount(labels, minlength=num_classes).double()
    present = counts > 0
    out["mean_per_class"] = (hits[present] / counts[present]).mean().item()
    return out


def stratified_split(labels: Tensor, val_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Deterministic stratified split of sample indices into (fit, held-out).

    Each class with ``n_c`` samples sends ``round(val_fraction * n_c)`` of them, at least one when
    ``n_c >= 2`` and never all, to the held-out part, picked at random with ``seed``.

    Returns:
        ``(fit_indices, val_indices)``, each sorted.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = labels.cpu().long()
    n = len(labels)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=generator)
    # Stable sort by label of a random permutation: each class's samples in random order.
    order = perm[torch.sort(labels[perm], stable=True).indices]
    sorted_labels = labels[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    n_val = torch.round(val_fraction * counts.double()).long()
    n_val = torch.minimum(torch.maximum(n_val, (counts >= 2).long()), (counts - 1).clamp_min(0))
    is_val = rank < n_val[sorted_labels]
    return order[~is_val].sort().values, order[is_val].sort().values


def _standardize(fit: Tensor, *others: Tensor) -> list[Tensor]:
    """Zero mean, unit variance per feature using the statistics of ``fit`` (constant -> 1)."""
    mean = fit.mean(dim=0)
    std = fit.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return [(x - mean) / std for x in (fit, *others)]


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 1000,
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS (strong-Wolfe line search).

    Minimizes ``mean_i CE(x_i W^T + b, y_i) + weight_decay / 2 * ||W||_F^2`` (bias unpenalized)
    in the dtype of ``features`` (pass float64 for a tight optimum). Multiplied by ``1 / wd`` it is
    scikit-learn's ``C * sum_i CE + 1/2 ||W||_F^2`` with ``C = 1 / (n * wd)``, so both have the same
    minimizer for three or more classes. Two classes: scikit-learn fits one weight vector
    ``w = W_1 - W_0``; our optimum has ``W_0 = -W_1``, so ``||W||_F^2 = ||w||^2 / 2`` and there
    ``C = 2 / (n * wd)``.

    Args:
        features: ``N×D`` features (standardize them first).
        labels: ``N`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes (the rows of ``W``).
        weight_decay: L2 strength ``wd`` (>= 0).
        max_iter: L-BFGS iterations.
        init: ``(W, b)`` to start from (warm start); zeros otherwise.

    Returns:
        ``(W [num_classes, D], b [num_classes])``; logits are ``features @ W.T + b``.
    """
    x, y = features, labels.long()
    d = x.shape[1]
    if init is None:
        weight = torch.zeros(num_classes, d, dtype=x.dtype, device=x.device)
        bias = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    else:
        weight, bias = (t.detach().clone() for t in init)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        max_eval=2 * max_iter,
        history_size=20,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y)
        loss = loss + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def _accuracy(x: Tensor, y: Tensor, params: tuple[Tensor, Tensor]) -> float:
    weight, bias = params
    return ((x @ weight.T + bias).argmax(dim=1) == y).double().mean().item()


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    weight_decays: Sequence[float] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
) -> dict[str, float]:
    """CLIP-style linear probe: logistic regression on frozen, standardized features.

    Protocol (Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision", ICML 2021, appendix A.3, with a grid instead of their parametric binary search):

    1. Hold out a stratified ``val_fraction`` of the training set (deterministic in ``seed``).
    2. For every L2 strength ``wd`` in ``weight_decays`` (largest first, each warm-started from
       the previous solution), fit multinomial logistic regression on the rest: standardize the
       features with the fitting part's mean and standard deviation, then minimize
       ``mean cross-entropy + wd / 2 * ||W||_F^2`` (bias unpenalized) with full-batch L-BFGS in
       float64 on the CPU. Keep the ``wd`` with the best held-out accuracy (ties: the larger).
    3. Refit with that ``wd`` on the whole training set (standardized with its own statistics)
       and report the test accuracy.

    ``wd`` is in per-sample units: scikit-learn's ``LogisticRegression(C=1 / (n * wd))`` fitted on
    the same standardized ``n`` samples minimizes the same objective for three or more classes.
    With a single value in ``weight_decays`` there is nothing to select: the held-out step is
    skipped and ``val_accuracy`` is NaN.

    Args:
        train_features: ``N×D`` frozen training features.
        train_labels: ``N`` integer labels in ``[0, num_classes)``.
        test_features: ``Q×D`` frozen test features.
        test_labels: ``Q`` integer labels in ``[0, num_classes)``.
        num_classes: number of classes.
        weight_decays: the L2 grid (positive values).
        val_fraction: held-out share of the training set for choosing ``wd``.
        seed: seed of the held-out split.
        max_iter: L-BFGS iterations per fit.

    Returns:
        ``accuracy`` (test), ``weight_decay`` (chosen), ``val_accuracy`` (held-out accuracy of
        the chosen ``wd``) and ``train_accuracy`` (of the final fit).
    """
    _check_splits(train_features, train_labels, test_features, test_labels, num_classes)
    grid = sorted((float(wd) for wd in weight_decays), reverse=True)
    if not grid or any(not math.isfinite(wd) or wd <= 0 for wd in grid):
        raise ValueError(
            f"weight_decays must be a non-empty sequence of positive numbers, got "
            f"{tuple(weight_decays)}"
        )
    if max_iter < 1:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    x = train_features.detach().cpu().double()
    y = train_labels.detach().cpu().long()
    x_test = test_features.detach().cpu().double()
    y_test = test_labels.detach().cpu().long()

    chosen, val_accuracy = grid[0], math.nan
    if len(grid) > 1:
        fit_idx, val_idx = stratified_split(y, val_fraction, seed)
        if len(val_idx) == 0:
            raise ValueError(
                "the held-out slice is empty: every class has fewer than 2 training samples; "
                "give more training samples or a single weight decay"
            )
        x_fit, x_val = _standardize(x[fit_idx], x[val_idx])
        y_fit, y_val = y[fit_idx], y[val_idx]
        params, best = None, -1.0
        for wd in grid:
            params = fit_logistic_regression(x_fit, y_fit, num_classes, wd, max_iter, params)
            score = _accuracy(x_val, y_val, params)
            if score > best:  # strict: ties keep the larger (earlier) weight decay
                chosen, best = wd, score
        val_accuracy = best

    x_all, x_test = _standardize(x, x_test)
    params = fit_logistic_regression(x_all, y, num_classes, chosen, max_iter)
    return {
        "accuracy": _accuracy(x_test, y_test, params),
        "weight_decay": chosen,
        "val_accuracy": val_accuracy,
        "train_accuracy": _accuracy(x_all, y, params),
    }
