"""Geographic shift in ``zoo evaluate`` and ``zoo compare`` (issue 26): an evaluation whose data
has ``geo_split.test_on: both`` runs on the in-region and the held-out split, printed side by
side with the gap; offline on the embedded data with a tiny FLAVARS checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from zoo.data.geo_splits import continent_of
from zoo.evaluation import load_evaluations
from zoo.evaluation.geo_shift import geo_shift_rows, geo_shift_table, region_of
from zoo.main import build_from_configs
from zoo.main import main as zoo_main

GEO = {
    "kind": "continents",
    "held_out": ["africa"],
    "seed": 0,
    "in_region_fraction": 0.3,
    "test_on": "both",
}


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def geo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny FLAVARS config and checkpoint, an evaluation config (zero-shot and retrieval on
    the geographic split) and a suite with two variants."""
    root = tmp_path_factory.mktemp("geo")
    data = {
        "class_path": "EmbeddedDataModule",
        "init_args": {
            "root": str(root / "data"),
            "splits": {"train": 40, "val": 8, "test": 20},
            "image_size": 32,
            "batch_size": 20,
        },
    }
    config = _write(
        root / "flavars.yaml",
        {
            "model": {
                "class_path": "FLAVARS",
                "init_args": {
                    "vision": {"name": "zoo_vit_tiny"},
                    "text": {"name": "tiny"},
                    "embed_dim": 32,
                    "fusion": {"width": 32, "layers": 1},
                    "location": {"hidden": 32},
                },
            },
            "data": data,
        },
    )
    geo_data = {**data, "init_args": {**data["init_args"], "geo_split": GEO}}
    evals = _write(
        root / "geo.yaml",
        {
            "evaluations": [
                {"class_path": "ZeroShot", "init_args": {"data": geo_data, "name": "geo zs"}},
                {"class_path": "Retrieval", "init_args": {"data": geo_data, "name": "geo ret"}},
            ],
            "variants": [
                {"name": "A", "config": ["flavars.yaml"]},
                {"name": "B", "config": ["flavars.yaml"]},
            ],
        },
    )
    model = build_from_configs([str(config)]).model
    ckpt = root / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return {"config": config, "evals": evals, "ckpt": ckpt, "root": root}


def test_test_on_both_becomes_an_in_region_and_a_held_out_evaluation(geo_run) -> None:
    configs = load_evaluations([geo_run["evals"]])
    assert [c.name for c in configs] == [
        "geo zs [in-region]",
        "geo zs [held-out]",
        "geo ret [in-region]",
        "geo ret [held-out]",
    ]
    tables = {}
    for config in configs[:2]:
        dm = config.build(32).data
        dm.prepare_data()
        dm.setup("test")
        tables[region_of(config.name)[1]] = dm.test_dataset.table
    held, inside = tables["held-out"], tables["in-region"]
    assert (continent_of(held["lat"], held["lon"]) == "africa").all()
    assert (continent_of(inside["lat"], inside["lon"]) != "africa").all()
    assert len(held) and len(inside) and not set(held["filepath"]) & set(inside["filepath"])


def _shift_cells(printed: str, columns: int) -> dict[tuple[str, str], list[str]]:
    out = {}
    for line in printed.split("# Geographic shift")[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 + columns and cells[0].startswith("geo "):
            out[(cells[0], cells[2])] = cells[3:]
    return out


def test_evaluate_prints_in_region_beside_held_out(geo_run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rows = zoo_main(
        [
            "evaluate",
            "--config",
            str(geo_run["config"]),
            "--ckpt_path",
            str(geo_run["ckpt"]),
            "--evals",
            str(geo_run["evals"]),
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert "| evaluation | protocol | metric | in-region | held-out | gap |" in printed
    ours = {(r["evaluation"], r["metric"]): r["ours"] for r in rows}
    cells = _shift_cells(printed, 3)
    assert {("geo zs", "zero_shot_top1"), ("geo ret", "image_to_text_R@1")} <= set(cells)
    for (name, metric), (inside, held, gap) in cells.items():
        a, b = ours[(f"{name} [in-region]", metric)], ours[(f"{name} [held-out]", metric)]
        assert float(inside) == pytest.approx(a, abs=0.005)
        assert float(held) == pytest.approx(b, abs=0.005)
        assert float(gap) == pytest.approx(b - a, abs=0.011)
    assert (out / "geo_shift.md").read_text() in printed
    saved = json.loads((out / "results.json").read_text())
    assert {r["evaluation"] for r in saved["results"]} == {n for n, _ in ours}


def test_compare_prints_each_variants_regions(geo_run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    zoo_main(
        [
            "compare",
            "--suite",
            str(geo_run["evals"]),
            "--ckpt_path",
            f"A={geo_run['ckpt']}",
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    header = "| A in-region | A held-out | A gap | B in-region | B held-out | B gap |"
    assert header in printed and header in (out / "geo_shift.md").read_text()
    cells = _shift_cells(printed, 6)
    assert ("geo zs", "zero_shot_top1") in cells
    assert all(c != "" for row in cells.values() for c in row)


def test_the_gap_is_held_out_minus_in_region() -> None:
    def row(name: str, metric: str, ours: float | None) -> dict:
        return {"evaluation": name, "protocol": "p", "metric": metric, "ours": ours}

    runs = {
        "m": [
            row("x [in-region]", "acc", 80.0),
            row("x [held-out]", "acc", 65.5),
            row("x [in-region]", "f1", 50.0),
            row("plain", "acc", 1.0),  # not a geographic evaluation: left out
        ]
    }
    (acc, f1) = geo_shift_rows(runs)
    assert acc["runs"]["m"] == {"in-region": 80.0, "held-out": 65.5, "gap": -14.5}
    assert f1["runs"]["m"] == {"in-region": 50.0, "gap": None}
    table = geo_shift_table(runs)
    assert "| x | p | acc | 80.00 | 65.50 | -14.50 |" in table
    assert "| x | p | f1 | 50.00 |  |  |" in table
    assert geo_shift_table({"m": [row("plain", "acc", 1.0)]}) is None
