"""Tests for zoo.metrics.embedding against slow loop-based references."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from zoo.metrics import (
    CrossModalRetrieval,
    GeodesicError,
    KNNAccuracy,
    retrieve_locations,
    zero_shot_logits,
)
from zoo.metrics.embedding import EARTH_RADIUS_KM, haversine_km, knn_predict, retrieval_ranks

# --------------------------------------------------------------------------------------------
# Slow references
# --------------------------------------------------------------------------------------------


def ref_recall(a: Tensor, b: Tensor, k: int) -> float:
    """Recall@k of a->b: sort the candidates of each query and locate its pair."""
    a, b = F.normalize(a.double(), dim=1), F.normalize(b.double(), dim=1)
    n, hits = a.shape[0], 0
    for i in range(n):
        sims = (b @ a[i]).tolist()
        order = sorted(range(n), key=lambda j: -sims[j])
        pos = order.index(i)
        while pos > 0 and sims[order[pos - 1]] == sims[i]:  # optimiztic ties
            pos -= 1
        hits += pos + 1 <= k
    return hits / n


def ref_knn(
    queries: Tensor,
    bank: Tensor,
    bank_labels: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    weighting: str,
    loo: bool,
) -> list[int]:
    """Weighted k-NN predictions with explicit loops."""
    q, b = F.normalize(queries.double(), dim=1), F.normalize(bank.double(), dim=1)
    labels = bank_labels.tolist()
    preds = []
    for i in range(q.shape[0]):
        sims = (b @ q[i]).tolist()
        cands = sorted(
            (j for j in range(b.shape[0]) if not (loo and j == i)), key=lambda j: -sims[j]
        )
        votes = [0.0] * num_classes
        for j in cands[:k]:
            votes[labels[j]] += math.exp(sims[j] / temperature) if weighting == "exp" else 1.0
        preds.append(max(range(num_classes), key=lambda c: (votes[c], -c)))
    return preds


def ref_haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, h)))


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _unit_with_cos(e: Tensor, cos: float, seed: int) -> Tensor:
    """Unit vector whose cosine with the unit vector ``e`` is exactly ``cos`` (up to rounding)."""
    r = _randn(e.numel(), seed=seed).double()
    r = F.normalize(r - (r @ e) * e, dim=0)
    return cos * e + math.sqrt(1 - cos**2) * r


# --------------------------------------------------------------------------------------------
# CrossModalRetrieval
# --------------------------------------------------------------------------------------------


def test_retrieval_identity_is_perfect() -> None:
    m = CrossModalRetrieval(top_k=(1, 5))
    m.update(torch.eye(8), torch.eye(8) * 3.0)  # unnormalized input is fine
    out = m.compute()
    assert set(out) == {
        "image_to_text_R@1",
        "image_to_text_R@5",
        "text_to_image_R@1",
        "text_to_image_R@5",
    }
    assert all(v.item() == 1.0 for v in out.values())


@pytest.mark.parametrize("n", [7, 8])
def test_retrieval_reversed_pairing(n: int) -> None:
    # a_i = e_i, b_i = e_{n-1-i}: the pair has sim 0 (unless i is the middle) and exactly one
    # candidate has sim 1; zero-similarity ties do not count, so the pair ranks 2nd.
    m = CrossModalRetrieval(top_k=(1, 2, 10), prefix_b="location")
    m.update(torch.eye(n), torch.eye(n).flip(0))
    out = m.compute()
    r1 = (n % 2) / n
    assert out["image_to_location_R@1"].item() == pytest.approx(r1)
    assert out["location_to_image_R@1"].item() == pytest.approx(r1)
    assert out["image_to_location_R@2"].item() == 1.0
    assert out["location_to_image_R@10"].item() == 1.0


def test_retrieval_ties_are_optimiztic() -> None:
    e = torch.eye(3)
    a = torch.stack([e[0], e[0], e[1]])
    assert retrieval_ranks(a, a).tolist() == [1, 1, 1]
    b = torch.stack([e[0] + 0.1 * e[2], e[0] + 0.1 * e[2], e[1]])
    # Query e[0] vs two identical candidates: neither is strictly more similar than the pair.
    assert retrieval_ranks(a, b).tolist() == [1, 1, 1]


def test_retrieval_matches_reference_random() -> None:
    a, b = _randn(60, 16, seed=1), _randn(60, 16, seed=2)
    b = a + 1.2 * b  # noisy pairs: recall strictly between 0 and 1
    top_k = (1, 3, 5, 10)
    m = CrossModalRetrieval(top_k=top_k, chunk_size=7)
    m.update(a, b)
    out = m.compute()
    for k in top_k:
        assert out[f"image_to_text_R@{k}"].item() == pytest.approx(ref_recall(a, b, k))
        assert out[f"text_to_image_R@{k}"].item() == pytest.approx(ref_recall(b, a, k))
    assert 0.0 < out["image_to_text_R@1"].item() < 1.0


def test_retrieval_batches_and_chunks_invariant() -> None:
    a, b = _randn(50, 8, seed=3), _randn(50, 8, seed=4)
    b = a + b
    single = CrossModalRetrieval(chunk_size=10_000)
    single.update(a, b)
    batched = CrossModalRetrieval(chunk_size=3)
    for sl in (slice(0, 13), slice(13, 14), slice(14, 50)):
        batched.update(a[sl], b[sl])
    expected, got = single.compute(), batched.compute()
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
    full = retrieval_ranks(a, b, chunk_size=10_000)
    for chunk in (1, 7, 49, 50):
        assert torch.equal(retrieval_ranks(a, b, chunk_size=chunk), full)


def test_retrieval_reset_and_errors() -> None:
    m = CrossModalRetrieval()
    with pytest.raises(ValueError, match="same shape"):
        m.update(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError):
        CrossModalRetrieval(prefix_a="x", prefix_b="x")
    with pytest.raises(ValueError):
        CrossModalRetrieval(top_k=(0,))
    m.update(torch.eye(4), torch.eye(4))
    m.reset()
    with pytest.raises(ValueError, match="without any samples"), pytest.warns(UserWarning):
        m.compute()


# --------------------------------------------------------------------------------------------
# KNNAccuracy
# --------------------------------------------------------------------------------------------


def _clusters(per_class: int = 25, num_classes: int = 3, dim: int = 16) -> tuple[Tensor, Tensor]:
    centers = torch.eye(dim)[:num_classes] * 4.0
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    emb = centers[labels] + 0.3 * _randn(labels.numel(), dim, seed=5)
    return emb, labels


def test_knn_separated_clusters_are_perfect() -> None:
    emb, labels = _clusters()
    for weighting in ("exp", "uniform"):
        m = KNNAccuracy(num_classes=3, k=20, weighting=weighting)
        m.update(emb, labels)
        assert m.compute().item() == 1.0


def _angles_set() -> tuple[Tensor, Tensor]:
    """Class 0 at 0/5/10 deg, a class-1 outlier at 3 deg, class 1 at 90/95/100 deg."""
    deg = torch.tensor([0.0, 5.0, 10.0, 3.0, 90.0, 95.0, 100.0], dtype=torch.float64)
    emb = torch.stack([deg.deg2rad().cos(), deg.deg2rad().sin()], dim=1)
    return emb, torch.tensor([0, 0, 0, 1, 1, 1, 1])


def test_knn_leave_one_out_known_votes() -> None:
    emb, labels = _angles_set()
    # k=1: nearest *other* point; 0 deg -> outlier (wrong), 5 deg -> outlier (wrong),
    # outlier -> 5 deg (wrong). Including the point itself would give 1.0.
    m = KNNAccuracy(num_classes=2, k=1)
    m.update(emb, labels)
    assert m.compute().item() == pytest.approx(4 / 7)
    # k=3 uniform: only the outlier is misclassified (its 3 neighbours are class 0).
    m = KNNAccuracy(num_classes=2, k=3, weighting="uniform")
    m.update(emb, labels)
    assert m.compute().item() == pytest.approx(6 / 7)
    preds = knn_predict(emb, emb, labels, 2, k=3, weighting="uniform", exclude_self=True)
    assert preds.tolist() == [0, 0, 0, 0, 1, 1, 1]


def _voting_bank() -> tuple[Tensor, Tensor, Tensor]:
    """Query e0; 8 class-1 items at cos 0.9, 12 class-0 at cos 0.5, 30 class-2 at cos -0.9."""
    dim = 64
    e0 = torch.zeros(dim, dtype=torch.float64)
    e0[0] = 1.0
    spec = [(1, 0.9)] * 8 + [(0, 0.5)] * 12 + [(2, -0.9)] * 30
    bank = torch.stack([_unit_with_cos(e0, c, seed=100 + i) for i, (_, c) in enumerate(spec)])
    labels = torch.tensor([lbl for lbl, _ in spec])
    return e0[None], bank, labels


@pytest.mark.parametrize(
    ("k", "weighting", "expected"),
    [(20, "uniform", 0), (20, "exp", 1), (50, "uniform", 2), (50, "exp", 1), (8, "uniform", 1)],
)
def test_knn_crafted_votes_exp_vs_uniform(k: int, weighting: str, expected: int) -> None:
    query, bank, bank_labels = _voting_bank()
    pred = knn_predict(query, bank, bank_labels, num_classes=3, k=k, weighting=weighting)
    assert pred.tolist() == [expected]
    assert ref_knn(query, bank, bank_labels, 3, k, 0.07, weighting, loo=False) == [expected]
    m = KNNAccuracy(num_classes=3, k=k, weighting=weighting)
    m.update(bank, bank_labels, reference=True)
    m.update(query, torch.tensor([1]))
    assert m.compute().item() == float(expected == 1)


@pytest.mark.parametrize("weighting", ["exp", "uniform"])
@pytest.mark.parametrize("loo", [True, False])
def test_knn_matches_reference_random(weighting: str, loo: bool) -> None:
    num_classes, k, temperature = 4, 5, 0.1
    emb = _randn(70, 12, seed=6)
    labels = torch.randint(0, num_classes, (70,), generator=torch.Generator().manual_seed(7))
    emb = emb + 0.8 * F.one_hot(labels, 12).float()  # weakly informative labels
    queries, q_labels = (emb, labels) if loo else (emb[:25], labels[:25])
    bank, bank_labels = (emb, labels) if loo else (emb[25:], labels[25:])
    expected = ref_knn(queries, bank, bank_labels, num_classes, k, temperature, weighting, loo)
    for chunk in (4, 1000):
        preds = knn_predict(
            queries, bank, bank_labels, num_classes, k, temperature, weighting, loo, chunk
        )
        assert preds.tolist() == expected
    m = KNNAccuracy(num_classes, k=k, temperature=temperature, weighting=weighting, chunk_size=9)
    if not loo:
        m.set_reference(bank[:10], bank_labels[:10])
        m.update(bank[10:], bank_labels[10:], reference=True)
    for sl in (slice(0, 11), slice(11, None)):
        m.update(queries[sl], q_labels[sl])
    acc = sum(p == t for p, t in zip(expected, q_labels.tolist(), strict=True)) / len(expected)
    assert m.compute().item() == pytest.approx(acc)
    assert 0.0 < acc < 1.0


def test_knn_set_reference_replaces_bank() -> None:
    query, bank, bank_labels = _voting_bank()
    m = KNNAccuracy(num_classes=3, k=20, weighting="exp")
    m.set_reference(bank, (bank_labels + 1) % 3)  # wrong bank, later replaced
    m.set_reference(bank, bank_labels)
    m.update(query, torch.tensor([1]))
    assert m.compute().item() == 1.0


def test_knn_clips_k_with_warning() -> None:
    emb, labels = _angles_set()
    m = KNNAccuracy(num_classes=2, k=20, weighting="uniform")
    m.update(emb, labels)
    with pytest.warns(UserWarning, match="using k=6"):
        acc = m.compute()
    expected = knn_predict(emb, emb, labels, 2, k=6, weighting="uniform", exclude_self=True)
    assert acc.item() == pytest.approx((expected == labels).float().mean().item())


def test_knn_errors() -> None:
    m = KNNAccuracy(num_classes=2)
    m.update(torch.randn(1, 4), torch.tensor([0]))
    with pytest.raises(ValueError, match="at least 2"):
        m.compute()
    m = KNNAccuracy(num_classes=2)
    m.update(torch.randn(3, 4), torch.tensor([0, 1, 0]), reference=True)
    with pytest.raises(ValueError, match="without query samples"):
        m.compute()
    m = KNNAccuracy(num_classes=2)
    m.update(torch.randn(3, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="Labels must lie"):
        m.compute()
    with pytest.raises(ValueError, match="integer"):
        m.update(torch.randn(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError):
        KNNAccuracy(num_classes=2, weighting="cosine")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Zero-shot helper
# --------------------------------------------------------------------------------------------


def test_zero_shot_logits_and_accuracy() -> None:
    img, cls = _randn(10, 6, seed=8), _randn(4, 6, seed=9)
    logits = zero_shot_logits(img * 5.0, cls)
    expected = torch.tensor([[float(F.cosine_similarity(i, c, dim=0)) for c in cls] for i in img])
    torch.testing.assert_close(logits, expected)
    targets = logits.argmax(1)
    targets[:3] = (targets[:3] + 1) % 4
    acc = MulticlassAccuracy(num_classes=4, average="micro")(logits, targets)
    assert acc.item() == pytest.approx(0.7)
    # Prompt ensembling: [C, T, D] templates are normalized, averaged and re-normalized.
    templates = _randn(4, 3, 6, seed=10)
    mean = F.normalize(templates, dim=-1).mean(1)
    torch.testing.assert_close(zero_shot_logits(img, templates), zero_shot_logits(img, mean))


# --------------------------------------------------------------------------------------------
# Geolocation
# --------------------------------------------------------------------------------------------


def test_haversine_known_distances() -> None:
    pred = torch.tensor([[0.0, 0.0], [0.0, 0.0], [12.3, 45.6], [90.0, 0.0], [0.0, 179.5]])
    true = torch.tensor([[0.0, 1.0], [0.0, 180.0], [12.3, 45.6], [0.0, 17.0], [0.0, -179.5]])
    d = haversine_km(pred, true)
    assert d[0].item() == pytest.approx(111.195, abs=1e-3)  # 1 degree on the equator
    assert d[1].item() == pytest.approx(20015.114, abs=1e-3)  # antipodes: pi * R
    assert d[2].item() == 0.0
    assert d[3].item() == pytest.approx(math.pi / 2 * EARTH_RADIUS_KM)
    assert d[4].item() == pytest.approx(111.195, abs=1e-3)  # across the antimeridian


def test_geodesic_error_metric() -> None:
    m = GeodesicError()
    m.update(torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 1.0]]))
    m.update(torch.tensor([[0.0, 0.0], [10.0, 20.0]]), torch.tensor([[0.0, 180.0], [10.0, 20.0]]))
    out = m.compute()
    keys = ["median_km", "mean_km", "acc@1km", "acc@25km", "acc@200km", "acc@750km", "acc@2500km"]
    assert list(out) == keys
    # distances: 0, 111.2, 20015.1, 0 -> median is the mean of the two middle values.
    assert out["median_km"].item() == pytest.approx(111.195 / 2, abs=1e-3)
    assert out["mean_km"].item() == pytest.approx((111.195 + 20015.114) / 4, abs=1e-3)
    assert out["acc@1km"].item() == 0.5
    assert out["acc@200km"].item() == 0.75
    assert out["acc@2500km"].item() == 0.75


def test_geodesic_error_matches_reference_random() -> None:
    g = torch.Generator().manual_seed(11)
    n = 41
    pred = torch.stack(
        [torch.rand(n, generator=g) * 180 - 90, torch.rand(n, generator=g) * 360 - 180], 1
    )
    true = (pred + torch.randn(n, 2, generator=g) * 8).clamp(-90, 90)
    dists = [ref_haversine(*p.tolist(), *t.tolist()) for p, t in zip(pred, true, strict=True)]
    m = GeodesicError(thresholds_km=(100, 500))
    for sl in (slice(0, 20), slice(20, None)):
        m.update(pred[sl], true[sl])
    out = m.compute()
    assert out["median_km"].item() == pytest.approx(statistics.median(dists), rel=1e-9)
    assert out["mean_km"].item() == pytest.approx(statistics.mean(dists), rel=1e-9)
    for t in (100, 500):
        assert out[f"acc@{t}km"].item() == pytest.approx(sum(d <= t for d in dists) / n)


def test_retrieve_locations() -> None:
    coords = torch.tensor([[48.85, 2.35], [40.71, -74.0], [-33.87, 151.21], [35.68, 139.69]])
    loc_emb = torch.eye(4) * 2.0
    img = torch.tensor([[0.1, 0.0, 0.9, 0.0], [0.0, 0.0, 0.0, 1.0], [1.0, 0.2, 0.0, 0.0]])
    expected = coords[[2, 3, 0]]
    assert torch.equal(retrieve_locations(img, loc_emb, coords), expected)
    assert torch.equal(retrieve_locations(img, loc_emb, coords, chunk_size=1), expected)
    m = GeodesicError()
    m.update(retrieve_locations(img, loc_emb, coords), expected)
    assert m.compute()["acc@1km"].item() == 1.0


# --------------------------------------------------------------------------------------------
# DDP: 2 gloo processes with uneven halves == single process on all data
# --------------------------------------------------------------------------------------------

_SPLIT = 37  # rank 0 gets the first 37 samples, rank 1 the remaining 26 (uneven gather)


def _ddp_data() -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(12)
    n, dim = 63, 16
    a = torch.randn(n, dim, generator=g)
    labels = torch.randint(0, 5, (n,), generator=g)
    emb = torch.randn(n, dim, generator=g) + F.one_hot(labels, dim).float()
    return {
        "a": a,
        "b": a + torch.randn(n, dim, generator=g),
        "emb": emb,
        "labels": labels,
        "ref_emb": torch.randn(n, dim, generator=g) + F.one_hot(labels.flip(0), dim).float(),
        "ref_labels": labels.flip(0),
        "pred": torch.rand(n, 2, generator=g) * 90,
        "true": torch.rand(n, 2, generator=g) * 90,
    }


def _ddp_run(rank: int | None) -> dict[str, Tensor]:
    """Run all metrics on this rank's part (``rank=None``: all data, no DDP)."""
    data = _ddp_data()
    sl = slice(None) if rank is None else (slice(0, _SPLIT) if rank == 0 else slice(_SPLIT, None))
    d = {key: val[sl] for key, val in data.items()}
    retrieval = CrossModalRetrieval(top_k=(1, 5), prefix_b="location", chunk_size=8)
    knn_loo = KNNAccuracy(num_classes=5, k=4, chunk_size=8)
    knn_ref = KNNAccuracy(num_classes=5, k=4, weighting="uniform", chunk_size=8)
    geo = GeodesicError()
    half = d["a"].shape[0] // 2
    for part in (slice(0, half), slice(half, None)):  # several batches per rank
        retrieval.update(d["a"][part], d["b"][part])
        knn_loo.update(d["emb"][part], d["labels"][part])
        knn_ref.update(d["ref_emb"][part], d["ref_labels"][part], reference=True)
        knn_ref.update(d["emb"][part], d["labels"][part])
        geo.update(d["pred"][part], d["true"][part])
    results = dict(retrieval.compute())
    results["knn_loo"] = knn_loo.compute()
    results["knn_ref"] = knn_ref.compute()
    results.update({f"geo_{key}": val for key, val in geo.compute().items()})
    return results


def _ddp_worker(rank: int, world_size: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        results = _ddp_run(rank)
        if rank == 0:
            torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


def test_ddp_gather_matches_single_process(tmp_path: Path) -> None:
    out_file = tmp_path / "ddp_results.pt"
    mp.spawn(
        _ddp_worker,
        args=(2, str(tmp_path / "pg_init"), str(out_file)),
        nprocs=2,
        join=True,
    )
    ddp = torch.load(out_file)
    single = _ddp_run(None)
    assert ddp.keys() == single.keys()
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], msg=key)
    assert 0.0 < single["image_to_location_R@1"].item() < 1.0
    assert 0.0 < single["knn_loo"].item() < 1.0
