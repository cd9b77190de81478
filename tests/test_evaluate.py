"""The evaluation command: configs, the results table, and end-to-end runs offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from zoo.evaluate import Evaluation, load_evaluations, main, markdown_table, write_results

ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIGS = sorted((ROOT / "configs" / "eval").rglob("*.yaml"))


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_eval_config_loads_and_its_data_parses(path: Path) -> None:
    from zoo.evaluate import build_datamodule

    evaluations = load_evaluations([path])
    assert evaluations
    for ev in evaluations:
        build_datamodule(ev, image_size=32)  # validates class_path and init_args


def test_suite_expands_relative_paths_and_nested_paper_numbers(tmp_path: Path) -> None:
    data = {"class_path": "EmbeddedDataModule"}
    _write(tmp_path / "a.yaml", {"protocol": "knn", "data": data, "paper": {"FLAVARS": {"knn_acc": 90}}})
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "suite.yaml", {"evaluations": ["../a.yaml", "../a.yaml"]})
    evaluations = load_evaluations([tmp_path / "sub" / "suite.yaml"])
    assert [e.name for e in evaluations] == ["a", "a"]
    assert evaluations[0].paper_numbers("FLAVARS") == {"knn_acc": 90}
    assert evaluations[0].paper_numbers("Aquila") == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"protocol": "knn", "data": {}, "datta": 1}, "unknown field"),
        ({"protocol": "knm", "data": {}}, "is not one of"),
        ({"protocol": "knn"}, "missing field 'data'"),
        ({"protocol": "knn", "data": {}, "paper": {"knn_acc": "high"}}, "'paper' maps"),
        ({"protocol": "knn", "data": {}, "options": {"kk": 5}}, r"unknown option\(s\) \['kk'\]"),
        ({"protocol": "segmentation", "data": {}, "options": {"frozen": True}}, "freeze_encoder"),
    ],
)
def test_bad_eval_config_names_the_file_and_field(tmp_path: Path, spec: dict, message: str) -> None:
    path = _write(tmp_path / "bad.yaml", spec)
    with pytest.raises(ValueError, match=message) as info:
        load_evaluations([path])
    assert "bad.yaml" in str(info.value)


def test_table_puts_ours_beside_the_paper(tmp_path: Path) -> None:
    rows = [
        {"evaluation": "RSICD", "protocol": "test", "config": "c", "source": "Aquila Table 3",
         "metric": "BLEU-1", "ours": 70.0, "paper": 74.6, "delta": -4.6},
        {"evaluation": "X", "protocol": "knn", "config": "c", "source": "", "metric": "error",
         "ours": None, "paper": None, "error": "FileNotFoundError: data/x does not exist"},
    ]
    write_results(rows, tmp_path, {"model": "Aquila"})
    table = (tmp_path / "results.md").read_text()
    assert "| RSICD | test | BLEU-1 | 70.00 | 74.60 | -4.60 | Aquila Table 3 |" in table
    assert "FileNotFoundError: data/x does not exist" in table
    assert json.loads((tmp_path / "results.json").read_text())["results"] == rows
    assert "- model: `Aquila`" in table and table.count("\n| ") == 2 + len(rows)
    assert table == markdown_table(rows, {"model": "Aquila"})


@pytest.fixture(scope="module")
def flavars_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny FLAVARS config on a small embedded dataset and a checkpoint of its initial weights."""
    import torch

    from zoo.evaluate import load_model

    root = tmp_path_factory.mktemp("flavars")
    data = {"class_path": "EmbeddedDataModule", "init_args": {
        "root": str(root / "data"), "num_train": 60, "num_val": 10, "num_test": 30,
        "image_size": 32, "batch_size": 16}}
    config = _write(root / "flavars.yaml", {
        "model": {"class_path": "FLAVARS", "init_args": {
            "image_encoder": "zoo_vit_tiny", "text_encoder": "tiny", "embed_dim": 32,
            "fusion_width": 32, "fusion_layers": 1, "location_hidden": 32}},
        "data": data,
    })
    model = load_model([str(config)], None)
    ckpt = root / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return config, ckpt, data


def test_evaluate_flavars_end_to_end_on_embedded_data(flavars_run, tmp_path: Path) -> None:
    config, ckpt, data = flavars_run
    evals = []
    for protocol in ("knn", "linear_probe", "zero_shot", "retrieval"):
        evals.append(str(_write(tmp_path / f"{protocol}.yaml", {
            "name": f"embedded {protocol}", "protocol": protocol, "data": data,
            "paper": {"FLAVARS": {"knn_acc": 99.0}} if protocol == "knn" else {},
        })))
    out = tmp_path / "out"
    rows = main(["--config", str(config), "--ckpt_path", str(ckpt), "--evals", *evals,
                 "--output", str(out), "--device", "cpu", "--wandb_project", "zoo-test"])
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "the W&B run was not written"
    metrics = {r["metric"]: r for r in rows}
    for key in ("knn_acc", "linear_probe_acc", "zero_shot_top1", "image_to_text_R@1",
                "text_to_image_R@10", "mean_recall"):
        assert 0.0 <= metrics[key]["ours"] <= 100.0, key
    assert metrics["knn_acc"]["paper"] == 99.0
    assert metrics["knn_acc"]["ours"] == pytest.approx(100 * _knn_by_hand(config, ckpt, data))
    assert metrics["knn_acc"]["delta"] == pytest.approx(metrics["knn_acc"]["ours"] - 99.0)
    assert "| embedded knn | knn | knn_acc |" in (out / "results.md").read_text()


def _knn_by_hand(config: Path, ckpt: Path, data: dict) -> float:
    """k-NN accuracy from features computed one image at a time, normalised by hand."""
    import torch

    from zoo.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, EmbeddedDataModule
    from zoo.evaluate import load_model
    from zoo.evaluation.probes import knn_accuracy

    model = load_model([str(config)], str(ckpt)).eval()
    dm = EmbeddedDataModule(**data["init_args"])
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255
    out = []
    for dataset in (dm.train_dataset, dm.test_dataset):
        with torch.no_grad():
            x = [model.encode_image(((s["image"] - mean) / std)[None])[0][0] for s in dataset]
        out.append((torch.stack(x), torch.stack([s["label"] for s in dataset])))
    (train_x, train_y), (test_x, test_y) = out
    return knn_accuracy(train_x, train_y, test_x, test_y, 10, k=20)


def test_a_failing_evaluation_is_recorded_with_keep_going(flavars_run, tmp_path: Path) -> None:
    config, ckpt, data = flavars_run
    missing = {"class_path": "ImageTextLocationDataModule", "init_args": {"root": str(tmp_path / "nowhere")}}
    bad = _write(tmp_path / "bad.yaml", {"name": "missing data", "protocol": "knn", "data": missing})
    good = _write(tmp_path / "good.yaml", {"name": "ok", "protocol": "knn", "data": data})
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        main(["--config", str(config), "--evals", str(bad), "--output", str(out)])
    rows = main(["--config", str(config), "--ckpt_path", str(ckpt), "--evals", str(bad), str(good),
                 "--output", str(out), "--keep_going"])
    assert rows[0]["metric"] == "error" and "nowhere" in rows[0]["error"]
    assert rows[1]["metric"] == "knn_acc"


def test_zero_shot_needs_a_text_encoder() -> None:
    from zoo.evaluate import Context, run_zero_shot

    class NoText:  # a generator has no text encoder
        pass

    ctx = Context(model=NoText(), device=None, ckpt_path=None)  # type: ignore[arg-type]
    ev = Evaluation(name="z", protocol="zero_shot", data={})
    with pytest.raises(ValueError, match="needs a text encoder"):
        run_zero_shot(ctx, ev, dm=None)  # type: ignore[arg-type]


def _on_fake_data(name: str, **init_args) -> Evaluation:
    """A shipped evaluation config pointed at the fake files of its dataset."""
    (ev,) = load_evaluations([ROOT / "configs" / "eval" / name])
    ev.data["init_args"].update(init_args)
    return ev


@pytest.mark.parametrize(
    ("config", "root", "metric"),
    [
        ("eurosat_knn.yaml", "eurosat", "knn_acc"),
        ("resisc45_zero_shot.yaml", "resisc45", "zero_shot_top1"),
        ("eurosat_linear_probe.yaml", "eurosat", "linear_probe_acc"),
        ("ucmerced_knn.yaml", "ucmerced", "knn_acc"),
        ("patternnet_knn.yaml", "patternnet", "knn_acc"),
    ],
)
def test_scene_evaluations_run_on_fake_benchmarks(flavars_run, tmp_path, config, root, metric) -> None:
    from zoo.evaluate import evaluate, load_model

    model = load_model([str(flavars_run[0])], str(flavars_run[1]))
    ev = _on_fake_data(config, root=str(ROOT / "tests" / "data" / root), batch_size=4)
    if ev.protocol == "linear_probe":  # a class or two per fake split: nothing to hold out
        ev.options["weight_decays"] = [1e-3]
    rows = evaluate(model, [ev], tmp_path, device="cpu")
    (row,) = [r for r in rows if r["metric"] == metric]
    assert 0.0 <= row["ours"] <= 100.0


def test_spacenet1_upernet_evaluation_runs_on_fake_data(flavars_run, tmp_path) -> None:
    from zoo.evaluate import evaluate, load_model

    model = load_model([str(flavars_run[0])], str(flavars_run[1]))
    ev = _on_fake_data("spacenet1_upernet.yaml", root=str(ROOT / "tests" / "data" / "spacenet1"), batch_size=2)
    ev.options["max_epochs"] = 1
    rows = evaluate(model, [ev], tmp_path, ckpt_path=str(flavars_run[1]), device="cpu")
    metrics = {r["metric"]: r for r in rows}
    assert 0.0 <= metrics["miou"]["ours"] <= 100.0
    assert metrics["miou"]["paper"] == 77.9
    assert "| SpaceNet1 UPerNet | segmentation | miou |" in (tmp_path / "results.md").read_text()


def _small_embedded(ev: Evaluation, root: Path) -> Evaluation:
    ev.data["init_args"].update(root=str(root), num_train=24, num_val=8, num_test=8, batch_size=4)
    return ev


def test_evaluate_aquila_on_embedded_and_fake_benchmarks(tmp_path: Path) -> None:
    """The generator protocols end to end: the test loop (captions with five references, VQA per
    question type with the paper's average) and the vision tower's k-NN."""
    from zoo.evaluate import evaluate, load_model

    override = _write(tmp_path / "small.yaml", {"data": {"init_args": {
        "root": str(tmp_path / "data"), "num_train": 24, "num_val": 8, "num_test": 8}}})
    model = load_model([str(ROOT / "configs" / "aquila.yaml"), str(override)], None)
    evals = [
        _small_embedded(load_evaluations([ROOT / "configs/eval/embedded_generation.yaml"])[0], tmp_path / "data"),
        _small_embedded(load_evaluations([ROOT / "configs/eval/embedded_knn.yaml"])[0], tmp_path / "data"),
        _on_fake_data("rsvqa_lr.yaml", root=str(ROOT / "tests/data/rsvqa_lr"), batch_size=8),
        _on_fake_data("rsicd_captioning.yaml", root=str(ROOT / "tests/data/rsicd"), batch_size=4),
    ]
    evals[2].options["average_over"] = ["presence"]
    rows = evaluate(model, evals, tmp_path / "out", device="cpu", limit_batches=2)
    by_eval: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_eval.setdefault(r["evaluation"], {})[r["metric"]] = r
    assert {"BLEU-1", "CIDEr", "vqa_accuracy"} <= set(by_eval["embedded captions + VQA"])
    assert 0 <= by_eval["embedded scenes k-NN"]["knn_acc"]["ours"] <= 100
    rsvqa = by_eval["RSVQA-LR"]
    assert rsvqa["vqa_average_accuracy"]["ours"] == pytest.approx(rsvqa["vqa_accuracy_presence"]["ours"])
    assert rsvqa["vqa_average_accuracy"]["paper"] == 92.72
    assert by_eval["RSICD captioning"]["BLEU-1"]["paper"] == 74.6
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| RSICD captioning | test | BLEU-1 |" in table and "74.60" in table


def test_evaluate_geopix_on_fake_referring_benchmarks(tmp_path: Path) -> None:
    from zoo.evaluate import evaluate, load_model

    override = _write(tmp_path / "small.yaml", {"data": {"init_args": {
        "root": str(tmp_path / "data"), "num_train": 24, "num_val": 8, "num_test": 8}}})
    model = load_model([str(ROOT / "configs" / "geopix.yaml"), str(override)], None)
    evals = [
        _on_fake_data("rrsisd.yaml", root=str(ROOT / "tests/data/rrsisd"), batch_size=2),
        _on_fake_data("refsegrs.yaml", root=str(ROOT / "tests/data/refsegrs"), batch_size=2),
    ]
    rows = evaluate(model, evals, tmp_path / "out", device="cpu", limit_batches=1)
    metrics = {(r["evaluation"], r["metric"]): r["ours"] for r in rows}
    for name in ("RRSIS-D referring segmentation", "RefSegRS referring segmentation"):
        assert 0 <= metrics[(name, "mIoU")] <= 100 and 0 <= metrics[(name, "cIoU")] <= 100
