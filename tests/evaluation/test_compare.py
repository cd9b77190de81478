"""``zoo compare``: an ablation suite's variants run one after the other and printed side by
side, offline on the embedded data with a tiny FLAVARS (the "+LE" ablation's shape)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from zoo.evaluation import load_evaluations
from zoo.evaluation.config import load_variants
from zoo.evaluation.results import side_by_side_table
from zoo.main import build_from_configs
from zoo.main import main as zoo_main

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny FLAVARS config, its no-location override, a suite with both as variants (k-NN and
    zero-shot on the embedded data), and two checkpoints with different weights."""
    root = tmp_path_factory.mktemp("ablation")
    data = {
        "class_path": "EmbeddedDataModule",
        "init_args": {
            "root": str(root / "data"),
            "splits": {"train": 40, "val": 8, "test": 20},
            "image_size": 32,
            "batch_size": 20,
        },
    }
    _write(
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
    _write(
        root / "no_location.yaml",
        {"model": {"init_args": {"objectives": {"loss_weights": {"location": 0.0}}}}},
    )
    (root / "suites").mkdir()
    knn = {"class_path": "KNN", "init_args": {"data": data, "name": "embedded k-NN", "k": 5}}
    zero_shot = {
        "class_path": "ZeroShot",
        "init_args": {
            "data": data,
            "name": "embedded zero-shot",
            "paper": {"no LE": {"zero_shot_top1": 50.0}},
        },
    }
    suite = _write(
        root / "suites" / "ablation.yaml",
        {
            "variants": [
                {"name": "+LE", "config": ["../flavars.yaml"]},
                {"name": "no LE", "config": ["../flavars.yaml", "../no_location.yaml"]},
            ],
            "evaluations": [knn, zero_shot],
        },
    )
    ckpts = []
    for noise, configs in (
        (0.0, [root / "flavars.yaml"]),
        (0.2, [root / "flavars.yaml", root / "no_location.yaml"]),
    ):
        model = build_from_configs([str(c) for c in configs]).model  # the CLI seeds: same init
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # the second "run" has other weights
            for p in model.parameters():
                p.add_(noise * torch.randn(p.shape, generator=g))
        ckpts.append(root / f"noise{noise}.ckpt")
        torch.save({"state_dict": model.state_dict()}, ckpts[-1])
    return suite, ckpts[0], ckpts[1]


def _number(cell: str) -> float:
    return float(cell.strip())


def test_compare_prints_both_variants_side_by_side(ablation, tmp_path: Path, capsys) -> None:
    suite, le, no_le = ablation
    out = tmp_path / "out"
    runs = zoo_main(
        [
            "compare",
            "--suite",
            str(suite),
            "--ckpt_path",
            f"+LE={le}",
            "--ckpt_path",
            f"no LE={no_le}",
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    printed = capsys.readouterr().out
    assert (
        "| evaluation | protocol | metric | +LE | no LE | difference | paper no LE | source |"
        in printed
    )
    rows = {}
    for line in printed.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 8 and cells[0].startswith("embedded"):
            rows[cells[2]] = cells
    assert {"knn_acc", "zero_shot_top1"} <= set(rows)
    folders = {"+LE": "LE", "no LE": "no_LE"}  # each variant's own zoo evaluate folder
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(folders.values())
    for metric, cells in rows.items():
        a, b, delta = _number(cells[3]), _number(cells[4]), cells[5]
        # each column is that variant's own zoo evaluate table, rounded as printed
        for name, value in (("+LE", a), ("no LE", b)):
            (mine,) = [r["ours"] for r in runs[name] if r["metric"] == metric]
            assert value == pytest.approx(mine, abs=0.005)
            saved = json.loads((out / folders[name] / "results.json").read_text())
            assert [r["ours"] for r in saved["results"] if r["metric"] == metric] == [mine]
        assert _number(delta) == pytest.approx(a - b, abs=0.011)
        assert 0.0 <= a <= 100.0 and 0.0 <= b <= 100.0
    assert rows["zero_shot_top1"][6] == "50.00" and rows["knn_acc"][6] == ""
    assert (out / "comparison.md").read_text() == side_by_side_table(runs, _header(out))
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["no LE"].endswith(f"no_location.yaml @ {no_le}")


def _header(out: Path) -> dict:
    saved = json.loads((out / "comparison.json").read_text())
    return {k: v for k, v in saved.items() if k != "results"}


def test_compare_refuses_unknown_variants_and_suites_without_them(
    ablation, tmp_path, capsys
) -> None:
    suite, le, _ = ablation
    with pytest.raises(SystemExit):
        zoo_main(["compare", "--suite", str(suite), "--ckpt_path", f"LE={le}"])
    assert "NAME one of the suite's variants ['+LE', 'no LE']" in capsys.readouterr().err
    plain = _write(tmp_path / "plain.yaml", {"evaluations": []})
    with pytest.raises(SystemExit):
        zoo_main(["compare", "--suite", str(plain)])
    assert "plain.yaml: names no variants" in capsys.readouterr().err
    bad = _write(
        tmp_path / "bad.yaml", {"evaluations": [], "variants": [{"name": "a", "confg": ["x"]}]}
    )
    with pytest.raises(ValueError, match="(?s)bad.yaml.*Option 'confg' is not accepted"):
        load_variants(bad)
    missing = _write(
        tmp_path / "missing.yaml",
        {"evaluations": [], "variants": [{"name": "a", "config": ["x.yaml"]}]},
    )
    with pytest.raises(
        ValueError, match=f"variant 'a': config {tmp_path / 'x.yaml'} does not exist"
    ):
        load_variants(missing)


def test_the_le_ablation_suite_names_both_paper_runs() -> None:
    suite = ROOT / "configs" / "eval" / "suites" / "flavars_le_ablation.yaml"
    le, no_le = load_variants(suite)
    assert [Path(c).name for c in le.config] == ["skyscript_vitb16.yaml"]
    assert [Path(c).name for c in no_le.config] == [
        "skyscript_vitb16.yaml",
        "skyscript_vitb16_no_location.yaml",
    ]
    assert all(Path(c).is_file() for c in le.config + no_le.config)
    evaluations = load_evaluations([suite])
    assert len(evaluations) == 12 and {e.protocol for e in evaluations} == {"knn"}
    # the same shape on the embedded data: the default config, the paper's override after it
    le, no_le = load_variants(suite.with_name("flavars_le_ablation_embedded.yaml"))
    assert [Path(c).name for c in no_le.config] == [
        "flavars.yaml",
        "skyscript_vitb16_no_location.yaml",
    ]
