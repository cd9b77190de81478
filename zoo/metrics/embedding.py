"""Embedding-evaluation metrics for image-text-location models, correct under DDP.

All metrics keep their inputs in list states reduced with ``dist_reduce_fx="cat"``, so
:meth:`~torchmetrics.Metric.compute` sees the whole split gathered from every rank. Embeddings are
L2-normalized inside, so raw or normalized features may be passed. Pairwise similarities are
computed in chunks of query rows so that large splits never materialize an ``N×N`` matrix.

* :class:`CrossModalRetrieval` -- recall@k in both directions for paired embeddings
  (image-text, image-location, ...).
* :class:`KNNAccuracy` -- frozen-feature weighted k-NN classification (DINO protocol), either
  leave-one-out over the accumulated set or against a separate reference bank.
* :class:`GeodesicError` -- great-circle error statistics for geolocation, together with
  :func:`retrieve_locations` which turns image/location embeddings into top-1 predicted
  coordinates.
* Zero-shot classification accuracy needs no dedicated metric: use
  ``torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")`` on the cosine
  logits returned by :func:`zero_shot_logits` (``image_emb @ class_emb.T`` after normalization).

Usage notes:

* Call ``update`` then ``compute``; the dict-valued metrics are logged with
  ``self.log_dict(metric.compute())`` followed by ``metric.reset()``. ``forward`` computes a
  per-batch value and is not meaningful for these set-level metrics.
* Under DDP every rank must call ``update`` at least once for each state it uses (the usual case
  with ``DistributedSampler``). Samples that the sampler duplicates to even out ranks are counted
  twice, exactly as in any other gathered metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import rank_zero_warn
from torchmetrics.utilities.data import dim_zero_cat

__all__ = [
    "EARTH_RADIUS_KM",
    "CrossModalRetrieval",
    "GeodesicError",
    "KNNAccuracy",
    "LocationRetrievalError",
    "haversine_km",
    "knn_predict",
    "retrieval_ranks",
    "retrieve_locations",
    "zero_shot_logits",
]

#: Mean Earth radius (IUGG) in kilometres.
EARTH_RADIUS_KM = 6371.0088

_DEFAULT_CHUNK = 1024


def _normalize(x: Tensor) -> Tensor:
    """Cast to a floating type suited for similarity computation and L2-normalize the rows."""
    if x.dtype != torch.float64:
        x = x.float()
    return F.normalize(x, dim=-1)


def _has_samples(state: list[Tensor] | Tensor) -> bool:
    """Whether a ``cat`` state (a list before sync, a tensor after) holds any sample."""
    return state.numel() > 0 if isinstance(state, Tensor) else len(state) > 0


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}.")


def _check_matrix(name: str, x: Tensor, cols: int | None = None) -> None:
    if x.ndim != 2 or (cols is not None and x.shape[1] != cols):
        shape = "B×D" if cols is None else f"B×{cols}"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}.")


def retrieval_ranks(
    queries: Tensor,
    candidates: Tensor,
    chunk_size: int = _DEFAULT_CHUNK,
    query_groups: Tensor | None = None,
    candidate_groups: Tensor | None = None,
) -> Tensor:
    """1-based rank of each query's best-ranked positive candidate by cosine similarity.

    Without groups, row ``i`` of ``queries`` is paired with row ``i`` of ``candidates``. With
    groups, every candidate is a positive of every query of its group, so several captions per
    image are one call each way: image -> text with ``query_groups = arange(N)`` and
    ``candidate_groups`` the image index of each caption, text -> image the other way round.
    Ties are resolved optimiztically: ``rank = 1 + #{candidates with strictly greater
    similarity than the best positive}``.

    Args:
        queries: ``Q×D`` query embeddings (normalized inside).
        candidates: ``M×D`` candidate embeddings (normalized inside); ``M = Q`` without groups.
        chunk_size: number of query rows whose similarities (``chunk_size×M``) are
            materialized at once.
        query_groups: ``Q`` integer group of each query (with ``candidate_groups``).
        candidate_groups: ``M`` integer group of each candidate (with ``query_groups``).

    Returns:
        ``Q`` long tensor of ranks in ``[1, M]``.

    Raises:
        ValueError: bad shapes, only one of the groups given, or a query without a positive.
    """
    _check_chunk_size(chunk_size)
    _check_matrix("queries", queries)
    _check_matrix("candidates", candidates, queries.shape[1])
    if (query_groups is None) != (candidate_groups is None):
        raise ValueError("give both query_groups and candidate_groups, or neither.")
    q = _normalize(queries)
    c = _normalize(candidates.to(q.device)).to(q.dtype)
    if query_groups is None:
        if queries.shape != candidates.shape:
            raise ValueError(
                f"queries and candidates must have the same shape, got {tuple(queries.shape)} "
                f"and {tuple(candidates.shape)}."
            )
        query_groups = candidate_groups = torch.arange(len(q), device=q.device)
    for name, groups, n in (
        ("query_groups", query_groups, len(q)),
        ("candidate_groups", candidate_groups, len(c)),
    ):
        if groups.shape != (n,) or groups.is_floating_point() or groups.is_complex():
            raise ValueError(
                f"{name} must be an integer tensor of shape [{n}], got {groups.dtype} "
                f"{tuple(groups.shape)}."
            )
    query_groups, candidate_groups = query_groups.to(q.device), candidate_groups.to(q.device)
    ranks = []
    for start in range(0, q.shape[0], chunk_size):
        sim = q[start : start + chunk_size] @ c.T  # chunk×M
        positive = candidate_groups[None, :] == query_groups[start : start + len(sim), None]
        if not bool(positive.any(dim=1).all()):
            lonely = (start + torch.nonzero(~positive.any(dim=1)).flatten())[:10].tolist()
            raise ValueError(f"every query needs a positive candidate; queries without: {lonely}.")
        best = sim.masked_fill(~positive, -math.inf).amax(dim=1)
        ranks.append(1 + (sim > best[:, None]).sum(dim=1))
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long, device=q.device)


def knn_predict(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    weighting: Literal["exp", "uniform"] = "exp",
    exclude_self: bool = False,
    chunk_size: int = _DEFAULT_CHUNK,
) -> Tensor:
    """Weighted k-NN class prediction with cosine similarity.

    Each query takes its ``k`` most similar bank entries; every neighbour votes for its label with
    weight ``exp(sim / temperature)`` (``"exp"``, as in DINO) or ``1`` (``"uniform"``). The class
    with the largest total vote wins; vote ties go to the lowest class index and similarity ties
    at the k-th neighbour are broken by :func:`torch.topk`.

    Args:
        queries: ``Q×D`` query embeddings (normalized inside).
        bank: ``N×D`` reference embeddings (normalized inside).
        bank_labels: ``N`` integer labels of ``bank`` in ``[0, num_classes)``.
        num_classes: number of classes.
        k: number of neighbours, at most the number of candidates per query.
        temperature: temperature of the ``"exp"`` weighting.
        weighting: ``"exp"`` or ``"uniform"``.
        exclude_self: leave-one-out mode; ``queries`` must then be ``bank`` itself and query ``i``
            never votes for itself (row ``i`` of the bank is excluded).
        chunk_size: number of query rows whose similarities are materialized at once.

    Returns:
        ``Q`` long tensor of predicted classes.
    """
    _check_chunk_size(chunk_size)
    _check_matrix("queries", queries)
    _check_matrix("bank", bank)
    if weighting not in ("exp", "uniform"):
        raise ValueError(f"weighting must be 'exp' or 'uniform', got {weighting!r}.")
    if bank_labels.shape != (bank.shape[0],):
        raise ValueError("bank_labels must have shape N matching bank.")
    if exclude_self and queries.shape[0] != bank.shape[0]:
        raise ValueError("exclude_self requires queries and bank to be the same set.")
    num_candidates = bank.shape[0] - int(exclude_self)
    if not 1 <= k <= num_candidates:
        raise ValueError(f"k must be in [1, {num_candidates}] (available candidates), got {k}.")

    q, b = _normalize(queries), _normalize(bank)
    b_t, labels = b.T, bank_labels.long()
    preds = []
    for start in range(0, q.shape[0], chunk_size):
        sim = q[start : start + chunk_size] @ b_t
        if exclude_self:
            rows = torch.arange(sim.shape[0], device=sim.device)
            sim[rows, rows + start] = -math.inf
        top_sim, top_idx = sim.topk(k, dim=1)
        if weighting == "exp":
            # Subtracting the row maximum keeps exp() finite and leaves the argmax unchanged.
            weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        else:
            weights = torch.ones_like(top_sim)
        votes = torch.zeros(sim.shape[0], num_classes, dtype=weights.dtype, device=sim.device)
        votes.scatter_add_(1, labels[top_idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=q.device)


def zero_shot_logits(image_emb: Tensor, class_emb: Tensor) -> Tensor:
    """Cosine-similarity logits of images against class (text) embeddings.

    Args:
        image_emb: ``B×D`` image embeddings.
        class_emb: ``C×D`` class embeddings, or ``C×T×D`` for ``T`` prompt templates per
            class; templates are normalized, averaged and re-normalized (CLIP prompt ensembling).

    Returns:
        ``B×C`` cosine similarities; feed them to ``MulticlassAccuracy`` for zero-shot accuracy.
    """
    _check_matrix("image_emb", image_emb)
    if class_emb.ndim == 3:
        class_emb = _normalize(class_emb).mean(dim=1)
    elif class_emb.ndim != 2:
        raise ValueError(f"class_emb must have shape [C, D] or [C, T, D], got {class_emb.shape}.")
    if class_emb.shape[-1] != image_emb.shape[-1]:
        raise ValueError("image_emb and class_emb must have the same embedding dimension.")
    return _normalize(image_emb) @ _normalize(class_emb).T


def retrieve_locations(
    image_emb: Tensor,
    location_emb: Tensor,
    candidate_locations: Tensor,
    chunk_size: int = _DEFAULT_CHUNK,
) -> Tensor:
    """Top-1 image-to-location retrieval over a gallery of candidate coordinates.

    Args:
        image_emb: ``B×D`` image (query) embeddings.
        location_emb: ``M×D`` embeddings of the gallery, e.g. the location encoder applied to
            ``candidate_locations``.
        candidate_locations: ``M×2`` gallery coordinates as ``(lat, lon)`` in degrees.
        chunk_size: number of query rows whose similarities are materialized at once.

    Returns:
        ``B×2`` ``(lat, lon)`` of the most cosine-similar candidate per query (first index on
        ties).
    """
    _check_chunk_size(chunk_size)
    _check_matrix("image_emb", image_emb)
    _check_matrix("location_emb", location_emb, image_emb.shape[1])
    _check_matrix("candidate_locations", candidate_locations, 2)
    if candidate_locations.shape[0] != location_emb.shape[0]:
        raise ValueError("location_emb and candidate_locations must have the same length.")
    if location_emb.shape[0] == 0:
        raise ValueError("The candidate gallery is empty.")
    q, g_t = _normalize(image_emb), _normalize(location_emb).T
    idx = [(q[s : s + chunk_size] @ g_t).argmax(dim=1) for s in range(0, q.shape[0], chunk_size)]
    best = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long, device=q.device)
    return candidate_locations[best.to(candidate_locations.device)]


def haversine_km(
    pred_deg: Tensor, target_deg: Tensor, radius_km: float = EARTH_RADIUS_KM
) -> Tensor:
    """Great-circle distance in km between ``[..., 2]`` ``(lat, lon)`` coordinates in degrees.

    Computed with the haversine formula in float64 (float32 on MPS, which lacks float64).

    Args:
        pred_deg: Coordinates ``[..., 2]``, ``(lat, lon)`` in degrees.
        target_deg: Coordinates of the same shape.
        radius_km: The sphere's radius (default: the mean Earth radius).

    Returns:
        The distances in km, shape ``[...]``, float64 (float32 on MPS).
    """
    dtype = torch.float32 if pred_deg.device.type == "mps" else torch.float64
    p, t = torch.deg2rad(pred_deg.to(dtype)), torch.deg2rad(target_deg.to(dtype))
    dlat, dlon = t[..., 0] - p[..., 0], t[..., 1] - p[..., 1]
    a = (dlat / 2).sin() ** 2 + p[..., 0].cos() * t[..., 0].cos() * (dlon / 2).sin() ** 2
    return 2 * radius_km * a.clamp(0.0, 1.0).sqrt().asin()


class _SplitMetric(Metric):
    """A metric over the whole split's gathered embeddings (not differentiable, no full
    state update); subclasses say whether higher is better."""

    is_differentiable = False
    higher_is_better: bool | None = True
    full_state_update = False


class CrossModalRetrieval(_SplitMetric):
    """Recall@k for paired cross-modal retrieval in both directions.

    ``update(emb_a, emb_b)`` receives row-aligned pairs (row ``i`` of ``emb_a`` matches row ``i`` of
    ``emb_b``). At ``compute`` every ``a`` item queries all gathered ``b`` items and vice versa;
    recall@k is the fraction of queries whose paired item ranks within the top ``k`` by cosine
    similarity, with the optimiztic tie rule of :func:`retrieval_ranks`
    (``rank = 1 + #strictly more similar candidates``); note that fully collapsed (identical)
    embeddings therefore score a recall of 1.

    Result keys: ``f"{prefix_a}_to_{prefix_b}_R@{k}"`` and ``f"{prefix_b}_to_{prefix_a}_R@{k}"``,
    values in ``[0, 1]``.

    Args:
        top_k: cut-offs ``k`` to report.
        prefix_a: name of the first modality (e.g. ``"image"``).
        prefix_b: name of the second modality (e.g. ``"text"`` or ``"location"``).
        chunk_size: query rows per similarity chunk at ``compute``.
        kwargs: forwarded to :class:`~torchmetrics.Metric`.

    Raises:
        ValueError: If ``top_k`` is empty or not positive, the prefixes are empty or equal, or
            ``chunk_size`` is not positive.
    """

    emb_a: list[Tensor]
    emb_b: list[Tensor]

    def __init__(
        self,
        top_k: Sequence[int] = (1, 5, 10),
        prefix_a: str = "image",
        prefix_b: str = "text",
        chunk_size: int = _DEFAULT_CHUNK,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        top_k = tuple(int(k) for k in top_k)
        if not top_k or any(k < 1 for k in top_k):
            raise ValueError(
                f"top_k must be a non-empty sequence of positive integers, got {top_k}."
            )
        if not prefix_a or not prefix_b or prefix_a == prefix_b:
            raise ValueError("prefix_a and prefix_b must be distinct non-empty strings.")
        _check_chunk_size(chunk_size)
        self.top_k = top_k
        self.prefix_a = prefix_a
        self.prefix_b = prefix_b
        self.chunk_size = chunk_size
        self.add_state("emb_a", default=[], dist_reduce_fx="cat")
        self.add_state("emb_b", default=[], dist_reduce_fx="cat")

    def update(self, emb_a: Tensor, emb_b: Tensor) -> None:
        """Accumulate a batch of row-aligned embedding pairs.

        Args:
            emb_a: ``B×D`` embeddings of the first modality.
            emb_b: ``B×D`` embeddings of the second modality, row ``i`` paired with ``emb_a``'s.

        Raises:
            ValueError: If an embedding is not a matrix or the shapes differ.
        """
        _check_matrix("emb_a", emb_a)
        _check_matrix("emb_b", emb_b)
        if emb_a.shape != emb_b.shape:
            raise ValueError(
                f"emb_a and emb_b must have the same shape, got {tuple(emb_a.shape)} and "
                f"{tuple(emb_b.shape)}."
            )
        self.emb_a.append(emb_a.detach())
        self.emb_b.append(emb_b.detach())

    def compute(self) -> dict[str, Tensor]:
        """Recall@k in both directions over all gathered pairs.

        Returns:
            ``{prefix_a}_to_{prefix_b}_R@{k}`` and ``{prefix_b}_to_{prefix_a}_R@{k}`` for every
            ``k``, in ``[0, 1]``.

        Raises:
            ValueError: If no pair was seen.
        """
        if not _has_samples(self.emb_a):
            raise ValueError(f"{type(self).__name__}.compute() called without any samples.")
        emb_a, emb_b = dim_zero_cat(self.emb_a), dim_zero_cat(self.emb_b)
        a, b = self.prefix_a, self.prefix_b
        out: dict[str, Tensor] = {}
        for name, ranks in (
            (f"{a}_to_{b}", retrieval_ranks(emb_a, emb_b, self.chunk_size)),
            (f"{b}_to_{a}", retrieval_ranks(emb_b, emb_a, self.chunk_size)),
        ):
            for k in self.top_k:
                out[f"{name}_R@{k}"] = (ranks <= k).float().mean()
        return out


class KNNAccuracy(_SplitMetric):
    """Top-1 accuracy of weighted k-NN classification on frozen embeddings (DINO protocol).

    Two modes, chosen at ``compute``:

    * Leave-one-out (no reference bank): each accumulated sample is classified by its ``k`` most
      similar *other* accumulated samples.
    * Reference bank: samples added with ``update(..., reference=True)`` (or
      :meth:`set_reference`) form the bank, e.g. the training split; the remaining (query)
      samples are classified against the bank only.

    Votes are weighted by ``exp(sim / temperature)`` (``"exp"``) or uniformly; see
    :func:`knn_predict` for tie handling. If fewer than ``k`` candidates are available, ``k`` is
    clipped to the number of candidates with a warning.

    Args:
        num_classes: number of classes; labels must lie in ``[0, num_classes)``.
        k: number of neighbours.
        temperature: temperature of the ``"exp"`` weighting.
        weighting: ``"exp"`` or ``"uniform"``.
        chunk_size: query rows per similarity chunk at ``compute``.
        kwargs: forwarded to :class:`~torchmetrics.Metric`.

    Raises:
        ValueError: If ``num_classes < 2``, ``k`` or ``temperature`` is not positive,
            ``weighting`` is unknown or ``chunk_size`` is not positive.
    """

    embeddings: list[Tensor]
    labels: list[Tensor]
    ref_embeddings: list[Tensor]
    ref_labels: list[Tensor]

    def __init__(
        self,
        num_classes: int,
        k: int = 20,
        temperature: float = 0.07,
        weighting: Literal["exp", "uniform"] = "exp",
        chunk_size: int = _DEFAULT_CHUNK,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        if weighting not in ("exp", "uniform"):
            raise ValueError(f"weighting must be 'exp' or 'uniform', got {weighting!r}.")
        _check_chunk_size(chunk_size)
        self.num_classes = num_classes
        self.k = k
        self.temperature = temperature
        self.weighting = weighting
        self.chunk_size = chunk_size
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("ref_embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("ref_labels", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, labels: Tensor, reference: bool = False) -> None:
        """Accumulate embeddings with their integer labels.

        Args:
            embeddings: ``B×D`` embeddings.
            labels: ``B`` integer labels.
            reference: Append the batch to the reference bank instead of the queries.

        Raises:
            ValueError: If the embeddings are not a matrix, or the labels are not ``B`` integers.
        """
        _check_matrix("embeddings", embeddings)
        if labels.shape != (embeddings.shape[0],):
            raise ValueError(
                f"labels must have shape [{embeddings.shape[0]}], got {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be an integer tensor, got {labels.dtype}.")
        emb_state, label_state = (
            (self.ref_embeddings, self.ref_labels) if reference else (self.embeddings, self.labels)
        )
        emb_state.append(embeddings.detach())
        label_state.append(labels.detach().long())

    def set_reference(self, embeddings: Tensor, labels: Tensor) -> None:
        """Replace this rank's part of the reference bank (gathered across ranks at ``compute``).

        Args:
            embeddings: ``B×D`` embeddings of the bank (e.g. the training split).
            labels: ``B`` integer labels.
        """
        self.ref_embeddings, self.ref_labels = [], []
        self.update(embeddings, labels, reference=True)

    def _check_labels(self, labels: Tensor) -> None:
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"Labels must lie in [0, {self.num_classes}).")

    def compute(self) -> Tensor:
        """Top-1 k-NN accuracy over all gathered query samples.

        Returns:
            The accuracy, a scalar in ``[0, 1]``.

        Raises:
            ValueError: If no query was seen, a label is out of range, or leave-one-out has
                fewer than 2 samples.
        """
        if not _has_samples(self.embeddings):
            raise ValueError(f"{type(self).__name__}.compute() called without query samples.")
        queries, labels = dim_zero_cat(self.embeddings), dim_zero_cat(self.labels)
        self._check_labels(labels)
        if _has_samples(self.ref_embeddings):
            bank, bank_labels = dim_zero_cat(self.ref_embeddings), dim_zero_cat(self.ref_labels)
            self._check_labels(bank_labels)
            exclude_self, num_candidates = False, bank.shape[0]
        else:
            bank, bank_labels = queries, labels
            exclude_self, num_candidates = True, queries.shape[0] - 1
            if num_candidates < 1:
                raise ValueError("Leave-one-out k-NN needs at least 2 samples.")
        k = self.k
        if k > num_candidates:
            rank_zero_warn(
                f"{type(self).__name__}: k={k} exceeds the {num_candidates} available neighbours;"
                f" using k={num_candidates}.",
                UserWarning,
            )
            k = num_candidates
        preds = knn_predict(
            queries,
            bank,
            bank_labels,
            self.num_classes,
            k=k,
            temperature=self.temperature,
            weighting=self.weighting,
            exclude_self=exclude_self,
            chunk_size=self.chunk_size,
        )
        return (preds == labels).float().mean()


class GeodesicError(_SplitMetric):
    """Great-circle geolocation error: median/mean distance and accuracy within thresholds.

    Coordinates are ``(lat, lon)`` in degrees; distances use the haversine formula on a sphere of
    radius :data:`EARTH_RADIUS_KM`. Result keys: ``"median_km"`` (mean of the two middle values
    for an even count), ``"mean_km"`` and ``f"acc@{t:g}km"`` (fraction with distance ``<= t``).

    Args:
        thresholds_km: distance thresholds; the default is the standard street / city / region /
            country / continent scale (1, 25, 200, 750, 2500 km).
        kwargs: forwarded to :class:`~torchmetrics.Metric`.

    Raises:
        ValueError: If a threshold is not positive.
    """

    higher_is_better = None

    distances: list[Tensor]

    def __init__(
        self, thresholds_km: Sequence[float] = (1.0, 25.0, 200.0, 750.0, 2500.0), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        thresholds = tuple(float(t) for t in thresholds_km)
        if any(t <= 0 for t in thresholds):
            raise ValueError(f"thresholds_km must be positive, got {thresholds}.")
        self.thresholds_km = thresholds
        self.add_state("distances", default=[], dist_reduce_fx="cat")

    def update(self, pred_location_deg: Tensor, true_location_deg: Tensor) -> None:
        """Accumulate the distances between predicted and true coordinates.

        Args:
            pred_location_deg: ``B×2`` predicted ``(lat, lon)`` in degrees.
            true_location_deg: ``B×2`` true ``(lat, lon)`` in degrees.

        Raises:
            ValueError: If a coordinate tensor is not ``B×2`` or the shapes differ.
        """
        _check_matrix("pred_location_deg", pred_location_deg, 2)
        _check_matrix("true_location_deg", true_location_deg, 2)
        if pred_location_deg.shape != true_location_deg.shape:
            raise ValueError("pred_location_deg and true_location_deg must have the same shape.")
        self.distances.append(haversine_km(pred_location_deg.detach(), true_location_deg.detach()))

    def compute(self) -> dict[str, Tensor]:
        """Median and mean distance in km and the fraction of samples within each threshold.

        Returns:
            ``median_km``, ``mean_km`` and ``acc@{t}km`` for every threshold ``t``.

        Raises:
            ValueError: If no sample was seen.
        """
        if not _has_samples(self.distances):
            raise ValueError(f"{type(self).__name__}.compute() called without any samples.")
        dist = dim_zero_cat(self.distances).sort().values
        n = dist.numel()
        median = (dist[(n - 1) // 2] + dist[n // 2]) / 2
        out = {"median_km": median, "mean_km": dist.mean()}
        for t in self.thresholds_km:
            out[f"acc@{t:g}km"] = (dist <= t).to(dist.dtype).mean()
        return out


class LocationRetrievalError(_SplitMetric):
    """Great-circle error of image-to-location retrieval over the whole split.

    Each image retrieves the most similar location embedding among all the split's locations;
    the error is the distance from the retrieved coordinates to the image's own (computed by
    :class:`GeodesicError`, so the keys are the same: ``median_km``, ``acc@{t}km`` ...). Unlike
    recall@k it gives credit for a neighbour in the right region, not only the exact pair.

    Args:
        thresholds_km: Distance thresholds of the ``acc@{t}km`` keys.
        kwargs: forwarded to :class:`~torchmetrics.Metric`.
    """

    higher_is_better = None

    def __init__(
        self, thresholds_km: Sequence[float] = (25.0, 200.0, 750.0, 2500.0), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.thresholds_km = tuple(thresholds_km)
        for name in ("image_emb", "location_emb", "locations"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, image_emb: Tensor, location_emb: Tensor, locations: Tensor) -> None:
        """Accumulate paired rows of images and their locations.

        Args:
            image_emb: ``B×D`` image embeddings.
            location_emb: ``B×D`` embeddings of the images' locations.
            locations: ``B×2`` ``(lat, lon)`` of the images, in degrees.

        Raises:
            ValueError: If a tensor is not a matrix of the expected width.
        """
        _check_matrix("image_emb", image_emb)
        _check_matrix("location_emb", location_emb, image_emb.shape[1])
        _check_matrix("locations", locations, 2)
        self.image_emb.append(image_emb.detach())
        self.location_emb.append(location_emb.detach())
        self.locations.append(locations.detach())

    def compute(self) -> dict[str, Tensor]:
        """The error of every image's top-1 retrieved location.

        Returns:
            The keys of :meth:`GeodesicError.compute`: ``median_km``, ``mean_km``,
            ``acc@{t}km``.
        """
        locations = dim_zero_cat(self.locations)
        predicted = retrieve_locations(
            dim_zero_cat(self.image_emb), dim_zero_cat(self.location_emb), locations
        )
        error = GeodesicError(thresholds_km=self.thresholds_km).to(locations.device)
        error.update(predicted, locations)
        return error.compute()
