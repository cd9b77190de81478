"""The results table: rows of ours beside the paper's numbers, as JSON, markdown and W&B."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from zoo.io import atomic_write_text

__all__ = [
    "COLUMNS",
    "log_to_wandb",
    "markdown_table",
    "result_rows",
    "side_by_side",
    "side_by_side_table",
    "write_results",
]

#: The columns of the W&B table.
COLUMNS = ["evaluation", "protocol", "metric", "ours", "paper", "delta", "baselines", "source"]
#: Metrics that are not fractions (not shown x100).
_RAW = {"loss"}


def result_rows(
    evaluation: Any,
    metrics: dict[str, float],
    error: str | None,
    published: dict[str, float],
    baselines: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """One row per metric (the paper's first), or one ``error`` row.

    Args:
        evaluation: what ran (its ``name``, ``protocol``, ``source`` and ``path``, if any).
        metrics: our values (fractions).
        error: why it failed, or None.
        published: the paper's numbers (percent).
        baselines: other models' published numbers (percent), shown beside them.
    """
    base = {
        "evaluation": evaluation.name,
        "protocol": evaluation.protocol,
        "config": getattr(evaluation, "path", ""),
        "source": evaluation.source,
    }
    if error is not None:
        return [{**base, "metric": "error", "ours": None, "paper": None, "error": error}]
    rows = []
    for key in sorted(set(metrics) | set(published), key=lambda k: (k not in published, k)):
        value = metrics.get(key)
        if value is not None and key not in _RAW and not key.endswith("loss"):
            value = 100.0 * value
        paper = published.get(key)
        delta = None if value is None or paper is None or math.isnan(value) else value - paper
        others = {
            name: numbers[key] for name, numbers in (baselines or {}).items() if key in numbers
        }
        rows.append(
            {
                **base,
                "metric": key,
                "ours": value,
                "paper": paper,
                "delta": delta,
                "baselines": others,
            }
        )
    return rows


def write_results(
    rows: list[dict[str, Any]], output: str | Path, header: dict[str, Any] | None = None
) -> None:
    """``results.json`` and ``results.md`` in ``output`` (each replaced atomically)."""
    output = Path(output)
    payload = {**(header or {}), "results": rows}
    atomic_write_text(output / "results.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(output / "results.md", markdown_table(rows, header))


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown_table(rows: list[dict[str, Any]], header: dict[str, Any] | None = None) -> str:
    """The results as a markdown table: ours beside the paper's number and the difference."""
    lines = ["# Evaluation results", ""]
    for key, value in (header or {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        "",
        "Values in percent (x100). Paper numbers come from the cited tables; the difference "
        "is ours minus the paper's.",
        "",
        "| evaluation | protocol | metric | ours | paper | difference | baselines | source |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in rows:
        ours = r.get("error") if r["metric"] == "error" else _fmt(r["ours"])
        delta = "" if r.get("delta") is None else f"{r['delta']:+.2f}"
        others = ", ".join(f"{name} {_fmt(v)}" for name, v in (r.get("baselines") or {}).items())
        lines.append(
            f"| {r['evaluation']} | {r['protocol']} | {r['metric']} | {ours} | "
            f"{_fmt(r['paper'])} | {delta} | {others} | {r['source']} |"
        )
    return "\n".join(lines) + "\n"


def side_by_side(runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (evaluation, protocol, metric) of any run, in the order first met, with each
    run's value (``values``), the paper's number beside each run (``paper``) and its error, if any
    (``errors``), keyed by run name."""
    merged: dict[tuple[str, str, str], dict[str, Any]] = {}
    for name, rows in runs.items():
        for r in rows:
            key = (r["evaluation"], r["protocol"], r["metric"])
            row = merged.setdefault(
                key,
                {
                    "evaluation": key[0],
                    "protocol": key[1],
                    "metric": key[2],
                    "values": {},
                    "paper": {},
                    "errors": {},
                    "source": r.get("source", ""),
                },
            )
            if r["metric"] == "error":
                row["errors"][name] = r.get("error")
                continue
            row["values"][name] = r["ours"]
            if r.get("paper") is not None:
                row["paper"][name] = r["paper"]
    return list(merged.values())


def side_by_side_table(
    runs: dict[str, list[dict[str, Any]]], header: dict[str, Any] | None = None
) -> str:
    """Several runs' results as one markdown table, a column per run (an ablation's rows).

    With two runs a ``difference`` column gives the first minus the second; a ``paper`` column
    per run appears where any evaluation has a published number for it.
    """
    names = list(runs)
    rows = side_by_side(runs)
    with_paper = [n for n in names if any(n in r["paper"] for r in rows)]
    columns = [
        *names,
        *(["difference"] if len(names) == 2 else []),
        *(f"paper {n}" for n in with_paper),
    ]
    lines = ["# Evaluation results side by side", ""]
    for key, value in (header or {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        "",
        "Values in percent (x100); one column per run"
        + (", the difference is the first minus the second." if len(names) == 2 else "."),
        "",
        "| evaluation | protocol | metric | " + " | ".join(columns) + " | source |",
        "| --- | --- | --- | " + " | ".join("---:" for _ in columns) + " | --- |",
    ]
    for r in rows:
        if r["metric"] == "error":
            cells = [r["errors"].get(n) or "" for n in names]
        else:
            cells = [_fmt(r["values"].get(n)) for n in names]
        if len(names) == 2:
            a, b = (r["values"].get(n) for n in names)
            cells.append("" if a is None or b is None or math.isnan(a - b) else f"{a - b:+.2f}")
        cells += [_fmt(r["paper"].get(n)) for n in with_paper]
        lines.append(
            f"| {r['evaluation']} | {r['protocol']} | {r['metric']} | "
            + " | ".join(cells)
            + f" | {r['source']} |"
        )
    return "\n".join(lines) + "\n"


def log_to_wandb(
    rows: list[dict[str, Any]],
    header: dict[str, Any],
    project: str,
    output: str | Path,
    online: bool = False,
) -> Path:
    """Log the table (and each value as a summary metric) as one W&B run, offline by default."""
    import wandb

    run = wandb.init(
        project=project,
        dir=str(output),
        job_type="evaluation",
        config=header,
        mode="online" if online else "offline",
        name=f"eval-{header.get('model', 'model')}",
    )
    data = [[str(r.get(c) or "") if c == "baselines" else r.get(c) for c in COLUMNS] for r in rows]
    run.log({"results": wandb.Table(columns=COLUMNS, data=data)})
    run.summary.update(
        {f"{r['evaluation']}/{r['metric']}": r["ours"] for r in rows if r.get("ours") is not None}
    )
    run.finish()
    return Path(run.dir)
