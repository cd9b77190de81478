"""Geographic shift in the results: one evaluation on the in-region and the held-out split.

An evaluation config whose datamodule has ``geo_split: {..., test_on: both}``
(:class:`~zoo.data.geo_splits.GeoSplit`) is run twice by ``zoo evaluate`` and ``zoo compare``:
once on the in-region test samples (the training regions, unseen samples) and once on the
held-out regions, as two evaluations named ``<name> [in-region]`` and ``<name> [held-out]``
(:func:`expand_regions`, called by :func:`~zoo.evaluation.config.load_evaluations`).
:func:`geo_shift_table` then prints their metrics side by side with the gap (held-out minus
in-region): how much a model loses where it was not trained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["REGIONS", "expand_regions", "geo_shift_rows", "geo_shift_table", "region_of"]

#: The two test splits of a geographic split, by their ``test_on`` value, and their labels.
REGIONS: dict[str, str] = {"in_region": "in-region", "held_out": "held-out"}


def _geo_split(spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    data = (spec.get("init_args") or {}).get("data")
    if not isinstance(data, Mapping):
        return None
    geo = (data.get("init_args") or {}).get("geo_split")
    return geo if isinstance(geo, Mapping) else None


def expand_regions(config: Any) -> list[Any]:
    """An evaluation config, or its in-region and held-out copies when its data's
    ``geo_split`` says ``test_on: both``.

    Args:
        config: an :class:`~zoo.evaluation.config.EvaluationConfig`.

    Returns:
        ``[config]``, or the two configs named ``<name> [in-region]`` and ``<name> [held-out]``
        whose data test on that split.
    """
    geo = _geo_split(config.spec)
    if geo is None or geo.get("test_on") != "both":
        return [config]
    return [
        config.with_args(
            name=f"{config.name} [{label}]",
            data={"init_args": {"geo_split": {"test_on": test_on}}},
        )
        for test_on, label in REGIONS.items()
    ]


def region_of(evaluation: str) -> tuple[str, str] | None:
    """``(base name, region label)`` of an evaluation name :func:`expand_regions` made.

    Args:
        evaluation: a results row's ``evaluation``.

    Returns:
        The base name and ``in-region`` or ``held-out``; None for any other evaluation.
    """
    for label in REGIONS.values():
        suffix = f" [{label}]"
        if evaluation.endswith(suffix):
            return evaluation[: -len(suffix)], label
    return None


def geo_shift_rows(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (evaluation, protocol, metric) evaluated in both regions, with each run's
    in-region and held-out value and the gap.

    Args:
        runs: each run's results rows (:func:`~zoo.evaluation.results.result_rows`) by name.

    Returns:
        Rows with ``evaluation``, ``protocol``, ``metric`` and, per run name, ``in-region``,
        ``held-out`` and ``gap`` (held-out minus in-region, None when either is missing).
    """
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name, rows in runs.items():
        for r in rows:
            found = region_of(str(r["evaluation"]))
            if found is None or r["metric"] == "error":
                continue
            base, label = found
            key = (base, r["protocol"], r["metric"])
            row = merged.setdefault(
                key, {"evaluation": base, "protocol": key[1], "metric": key[2], "runs": {}}
            )
            row["runs"].setdefault(name, {})[label] = r["ours"]
    for row in merged.values():
        for values in row["runs"].values():
            inside, outside = values.get("in-region"), values.get("held-out")
            ok = inside is not None and outside is not None and not math.isnan(outside - inside)
            values["gap"] = outside - inside if ok else None
    return list(merged.values())


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def geo_shift_table(
    runs: dict[str, list[dict[str, Any]]], header: dict[str, Any] | None = None
) -> str | None:
    """The in-region and held-out results side by side, with the gap, as markdown.

    Args:
        runs: each run's results rows by name (one run for ``zoo evaluate``, one per variant for
            ``zoo compare``).
        header: run information written above the table.

    Returns:
        The table, or None when no evaluation ran in both regions.
    """
    rows = geo_shift_rows(runs)
    if not rows:
        return None
    names = list(runs)
    columns = [
        f"{n} {c}" if len(names) > 1 else c for n in names for c in (*REGIONS.values(), "gap")
    ]
    lines = ["# Geographic shift: in-region against held-out regions", ""]
    for key, value in (header or {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        "",
        "Values in percent (x100). in-region: unseen samples of the training regions; held-out: "
        "the regions left out of training; gap: held-out minus in-region.",
        "",
        "| evaluation | protocol | metric | " + " | ".join(columns) + " |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for r in rows:
        cells = []
        for n in names:
            values = r["runs"].get(n, {})
            cells += [_fmt(values.get(label)) for label in REGIONS.values()]
            gap = values.get("gap")
            cells.append("" if gap is None else f"{gap:+.2f}")
        lines.append(
            f"| {r['evaluation']} | {r['protocol']} | {r['metric']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
