"""The evaluation command: configs, the results table, and end-to-end runs offline."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentError

from zoo.evaluation import (
    CapabilityError,
    EvaluationConfig,
    ZeroShot,
    evaluate,
    load_evaluations,
    markdown_table,
    write_results,
)
from zoo.main import build_from_configs
from zoo.main import main as zoo_main

ROOT = Path(__file__).resolve().parents[1]
EVAL_CONFIGS = sorted((ROOT / "configs" / "eval").rglob("*.yaml"))
EMBEDDED = {"class_path": "EmbeddedDataModule"}


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _spec(protocol: str, data: dict | str = EMBEDDED, **init_args) -> dict:
    """An evaluation config: ``protocol`` (a class of zoo.evaluation) on ``data``."""
    return {"class_path": protocol, "init_args": {"data": data, **init_args}}


def load_model(configs: list[str], ckpt_path: str | None):
    return build_from_configs(configs, ckpt_path).model


@pytest.mark.parametrize("path", EVAL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_eval_config_loads_and_its_data_parses(path: Path) -> None:
    evaluations = load_evaluations([path])
    assert evaluations
    for ev in evaluations:
        ev.build(image_size=32)  # validates class_path and init_args, builds the datamodule


def test_suite_expands_relative_paths_and_nested_paper_numbers(tmp_path: Path) -> None:
    _write(tmp_path / "a.yaml", _spec("KNN", paper={"FLAVARS": {"knn_acc": 90}}))
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "suite.yaml", {"evaluations": ["../a.yaml", "../a.yaml"]})
    evaluations = load_evaluations([tmp_path / "sub" / "suite.yaml"])
    assert [e.name for e in evaluations] == ["a", "a"]
    assert evaluations[0].paper_numbers("FLAVARS") == {"knn_acc": 90}
    assert evaluations[0].paper_numbers("Aquila") == {}


def test_suite_holds_inline_evaluations_and_names_the_bad_one(tmp_path: Path) -> None:
    suite = _write(tmp_path / "suite.yaml", {"evaluations": [_spec("KNN", name="inline", k=5)]})
    (ev,) = load_evaluations([suite])
    assert ev.name == "inline" and ev.protocol == "knn" and ev.build().k == 5
    _write(suite, {"evaluations": [_spec("KNN", k="many")]})
    with pytest.raises(ValueError, match=r"(?s)suite\.yaml \(evaluations\[0\]\).*Parser key \"k\""):
        load_evaluations([suite])
    _write(suite, {"evaluations": [], "nmae": "suite"})
    with pytest.raises(ValueError, match="suite.yaml: Option 'nmae' is not accepted"):
        load_evaluations([suite])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (_spec("KNN", datta=1), "Option 'datta' is not accepted"),
        (_spec("KNM"), "KNM"),
        ({"class_path": "KNN"}, "required: data"),
        (_spec("KNN", paper={"knn_acc": "high"}), 'Parser key "paper"'),
        (_spec("KNN", kk=5), r"Option 'kk' is not accepted"),
        (_spec("Segmentation", frozen=True), "(?s)frozen.*Segmentation takes: .*freeze_encoder"),
        (
            _spec("KNN", {"class_path": "EmbeddedDataModule", "init_args": {"rooot": "x"}}),
            "Option 'rooot' is not accepted",
        ),
    ],
)
def test_bad_eval_config_names_the_file_and_field(tmp_path: Path, spec: dict, message: str) -> None:
    path = _write(tmp_path / "bad.yaml", spec)
    with pytest.raises(ValueError, match=message) as info:
        load_evaluations([path])
    assert "bad.yaml" in str(info.value)


def test_misspelt_option_is_jsonargparses_error_naming_the_option(tmp_path: Path, capsys) -> None:
    """A misspelt key fails when the config is read, in jsonargparse's words after the file
    name; ``zoo evaluate`` stops there, before building the model."""
    path = _write(tmp_path / "knn.yaml", _spec("zoo.evaluation.KNN", temperatur=0.1))
    with pytest.raises(ValueError) as info:
        load_evaluations([path])
    assert isinstance(info.value.__cause__, ArgumentError)
    assert str(info.value.__cause__) in str(info.value)
    assert str(info.value).startswith(f"{path}: ")
    assert "Option 'temperatur' is not accepted" in str(info.value)
    with pytest.raises(SystemExit) as exit_:
        zoo_main(["evaluate", "--config", "configs/no-such-run.yaml", "--evals", str(path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "zoo evaluate: error:" in err and "knn.yaml" in err and "'temperatur'" in err


def test_table_puts_ours_beside_the_paper(tmp_path: Path) -> None:
    rows = [
        {
            "evaluation": "RSICD",
            "protocol": "test",
            "config": "c",
            "source": "Aquila Table 3",
            "metric": "BLEU-1",
            "ours": 70.0,
            "paper": 74.6,
            "delta": -4.6,
        },
        {
            "evaluation": "X",
            "protocol": "knn",
            "config": "c",
            "source": "",
            "metric": "error",
            "ours": None,
            "paper": None,
            "error": "FileNotFoundError: data/x does not exist",
        },
    ]
    write_results(rows, tmp_path, {"model": "Aquila"})
    table = (tmp_path / "results.md").read_text()
    assert "| RSICD | test | BLEU-1 | 70.00 | 74.60 | -4.60 |  | Aquila Table 3 |" in table
    assert "FileNotFoundError: data/x does not exist" in table
    assert json.loads((tmp_path / "results.json").read_text())["results"] == rows
    assert "- model: `Aquila`" in table and table.count("\n| ") == 2 + len(rows)
    assert table == markdown_table(rows, {"model": "Aquila"})
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def flavars_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny FLAVARS config on a small embedded dataset and a checkpoint of its initial weights."""
    import torch

    root = tmp_path_factory.mktemp("flavars")
    data = {
        "class_path": "EmbeddedDataModule",
        "init_args": {
            "root": str(root / "data"),
            "splits": {"train": 60, "val": 10, "test": 30},
            "image_size": 32,
            "batch_size": 16,
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
    model = load_model([str(config)], None)
    ckpt = root / "model.ckpt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return config, ckpt, data


def test_model_is_built_from_args_never_from_sys_argv(flavars_run, monkeypatch) -> None:
    config, ckpt, _ = flavars_run
    argv = ["zoo", "evaluate", "--not-an-option", "--model.init_args.embed_dim=7"]
    monkeypatch.setattr(sys, "argv", list(argv))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_from_configs([str(config)], str(ckpt))
    assert sys.argv == argv
    assert cli.model.encoders.image_projection.out_features == 32
    assert not [w for w in caught if "args parameter" in str(w.message)]


def test_evaluate_flavars_end_to_end_on_embedded_data(flavars_run, tmp_path: Path) -> None:
    config, ckpt, data = flavars_run
    evals = []
    for protocol, cls in (
        ("knn", "KNN"),
        ("linear_probe", "LinearProbe"),
        ("zero_shot", "ZeroShot"),
        ("retrieval", "Retrieval"),
    ):
        evals.append(
            str(
                _write(
                    tmp_path / f"{protocol}.yaml",
                    _spec(
                        f"zoo.evaluation.{cls}",
                        data,
                        name=f"embedded {protocol}",
                        paper={"FLAVARS": {"knn_acc": 99.0}} if protocol == "knn" else {},
                    ),
                )
            )
        )
    out = tmp_path / "out"
    rows = zoo_main(
        [
            "evaluate",
            "--config",
            str(config),
            "--ckpt_path",
            str(ckpt),
            "--evals",
            *evals,
            "--output",
            str(out),
            "--device",
            "cpu",
            "--wandb_project",
            "zoo-test",
        ]
    )
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb")), "the W&B run was not written"
    metrics = {r["metric"]: r for r in rows}
    for key in (
        "knn_acc",
        "linear_probe_acc",
        "zero_shot_top1",
        "image_to_text_R@1",
        "text_to_image_R@10",
        "mean_recall",
    ):
        assert 0.0 <= metrics[key]["ours"] <= 100.0, key
    assert metrics["knn_acc"]["paper"] == 99.0
    assert metrics["knn_acc"]["ours"] == pytest.approx(100 * _knn_by_hand(config, ckpt, data))
    assert metrics["knn_acc"]["delta"] == pytest.approx(metrics["knn_acc"]["ours"] - 99.0)
    assert "| embedded knn | knn | knn_acc |" in (out / "results.md").read_text()


def _knn_by_hand(config: Path, ckpt: Path, data: dict) -> float:
    """k-NN accuracy from features computed one image at a time, normalized by hand."""
    import torch

    from zoo.data.datamodules import IMAGENET_MEAN, IMAGENET_STD, EmbeddedDataModule
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
            x = [
                model.image_features_and_embedding(((s["image"] - mean) / std)[None])[0][0]
                for s in dataset
            ]
        out.append((torch.stack(x), torch.stack([s["label"] for s in dataset])))
    (train_x, train_y), (test_x, test_y) = out
    return knn_accuracy(train_x, train_y, test_x, test_y, 10, k=20)


def test_a_failing_evaluation_is_recorded_with_keep_going(flavars_run, tmp_path: Path) -> None:
    config, ckpt, data = flavars_run
    missing = {
        "class_path": "ImageTextLocationDataModule",
        "init_args": {"root": str(tmp_path / "nowhere")},
    }
    bad = _write(tmp_path / "bad.yaml", _spec("KNN", missing, name="missing data"))
    good = _write(tmp_path / "good.yaml", _spec("KNN", data, name="ok"))
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        zoo_main(["evaluate", "--config", str(config), "--evals", str(bad), "--output", str(out)])
    rows = zoo_main(
        [
            "evaluate",
            "--config",
            str(config),
            "--ckpt_path",
            str(ckpt),
            "--evals",
            str(bad),
            str(good),
            "--output",
            str(out),
            "--keep_going",
        ]
    )
    assert rows[0]["metric"] == "error" and "nowhere" in rows[0]["error"]
    assert rows[1]["metric"] == "knn_acc"


def test_zero_shot_needs_a_text_encoder(flavars_run, tmp_path: Path) -> None:
    from lightning import LightningModule

    class NoText(LightningModule):  # a generator has no text encoder
        pass

    ev = ZeroShot(data=None, name="z")  # type: ignore[arg-type]
    with pytest.raises(CapabilityError, match="needs a text encoder") as info:
        evaluate(NoText(), [ev], tmp_path, device="cpu")
    assert "NoText" in str(info.value) and "TextEmbeddings" in str(info.value)
    (row,) = evaluate(NoText(), [ev], tmp_path, device="cpu", keep_going=True)
    assert row["metric"] == "error" and row["error"].startswith("CapabilityError")
    # A protocol that does not apply to a model is refused before anything runs.
    flavars = load_model([str(flavars_run[0])], None)
    (referring,) = load_evaluations([ROOT / "configs/eval/rrsisd.yaml"])
    with pytest.raises(
        CapabilityError, match=r"needs a mask decoder \(Masks: forward_with_masks\)"
    ):
        evaluate(flavars, [referring], tmp_path, device="cpu")


def _on_fake_data(name: str, **init_args) -> EvaluationConfig:
    """A shipped evaluation config pointed at the fake files of its dataset."""
    (ev,) = load_evaluations([ROOT / "configs" / "eval" / name])
    return ev.with_args(data={"init_args": init_args})


@pytest.mark.parametrize(
    ("config", "root", "metric"),
    [
        ("eurosat_knn.yaml", "eurosat", "knn_acc"),
        ("resisc45_zero_shot.yaml", "resisc45", "zero_shot_top1"),
        ("eurosat_linear_probe.yaml", "eurosat", "linear_probe_acc"),
        ("ucmerced_knn.yaml", "ucmerced", "knn_acc"),
        ("patternnet_knn.yaml", "patternnet", "knn_acc"),
        ("aid_knn.yaml", "scene_benchmarks/aid", "knn_acc"),  # SkyScript's layout
        ("fmow_zero_shot.yaml", "scene_benchmarks/fmow", "zero_shot_top1"),
    ],
)
def test_scene_evaluations_run_on_fake_benchmarks(
    flavars_run, tmp_path, config, root, metric
) -> None:
    model = load_model([str(flavars_run[0])], str(flavars_run[1]))
    ev = _on_fake_data(config, root=str(ROOT / "tests" / "data" / root), batch_size=4)
    if ev.protocol == "linear_probe":  # a class or two per fake split: nothing to hold out
        ev = ev.with_args(weight_decays=[1e-3])
    rows = evaluate(model, [ev], tmp_path, device="cpu")
    (row,) = [r for r in rows if r["metric"] == metric]
    assert 0.0 <= row["ours"] <= 100.0


def test_spacenet1_upernet_evaluation_runs_on_fake_data(flavars_run, tmp_path) -> None:
    model = load_model([str(flavars_run[0])], str(flavars_run[1]))
    ev = _on_fake_data(
        "spacenet1_upernet.yaml", root=str(ROOT / "tests" / "data" / "spacenet1"), batch_size=2
    )
    ev = ev.with_args(max_epochs=1)
    optimizer = ev.build().upernet_args["optimizer"]  # keys not given keep UPerNet's defaults
    assert optimizer.lr == 1e-4 and optimizer.betas == (0.9, 0.999)
    rows = evaluate(model, [ev], tmp_path, ckpt_path=str(flavars_run[1]), device="cpu")
    metrics = {r["metric"]: r for r in rows}
    assert 0.0 <= metrics["miou"]["ours"] <= 100.0
    assert metrics["miou"]["paper"] == 77.9
    assert "| SpaceNet1 UPerNet | segmentation | miou |" in (tmp_path / "results.md").read_text()


def test_export_rebuilds_the_run_and_writes_its_weights(flavars_run, tmp_path) -> None:
    """``zoo export`` shares the model building of ``zoo evaluate``: the exported weights are
    the checkpoint's and the exported config rebuilds the same model."""
    import torch
    from safetensors.torch import load_file

    config, ckpt, _ = flavars_run
    path = zoo_main(
        ["export", "--config", str(config), "--ckpt_path", str(ckpt), "--output", str(tmp_path)]
    )
    assert path == tmp_path / "model.safetensors"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    weights = load_file(path)
    assert weights.keys() == state.keys()
    assert all(torch.equal(weights[k], state[k]) for k in state)
    rebuilt = load_model([str(tmp_path / "config.yaml")], str(path))
    assert rebuilt.encoders.image_projection.out_features == 32
    # the self-contained folder (issue 23): the weights, the config, the tokenizer, preprocessing
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.yaml", "model.safetensors", "config.json", "preprocessor_config.json"} <= names
    assert "tokenizer.json" in names and not any(n.endswith(".tmp") for n in names)


def _small_embedded(ev: EvaluationConfig, root: Path) -> EvaluationConfig:
    return ev.with_args(
        data={
            "init_args": {
                "root": str(root),
                "splits": {"train": 24, "val": 8, "test": 8},
                "batch_size": 4,
            }
        }
    )


def test_evaluate_aquila_on_embedded_and_fake_benchmarks(tmp_path: Path) -> None:
    """The generator protocols end to end: the test loop (captions with five references, VQA per
    question type with the paper's average) and the vision tower's k-NN."""
    override = _write(
        tmp_path / "small.yaml",
        {
            "data": {
                "init_args": {
                    "root": str(tmp_path / "data"),
                    "splits": {"train": 24, "val": 8, "test": 8},
                }
            }
        },
    )
    model = load_model([str(ROOT / "configs" / "aquila.yaml"), str(override)], None)
    evals = [
        _small_embedded(
            load_evaluations([ROOT / "configs/eval/embedded_generation.yaml"])[0], tmp_path / "data"
        ),
        _small_embedded(
            load_evaluations([ROOT / "configs/eval/embedded_knn.yaml"])[0], tmp_path / "data"
        ),
        _small_embedded(
            load_evaluations([ROOT / "configs/eval/embedded_scene_generation.yaml"])[0],
            tmp_path / "data",
        ),
        _on_fake_data("rsvqa_lr.yaml", root=str(ROOT / "tests/data/rsvqa_lr"), batch_size=8),
        _on_fake_data("rsicd_captioning.yaml", root=str(ROOT / "tests/data/rsicd"), batch_size=4),
    ]
    evals[3] = evals[3].with_args(average_over=["presence"])
    rows = evaluate(model, evals, tmp_path / "out", device="cpu", limit_batches=2)
    by_eval: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_eval.setdefault(r["evaluation"], {})[r["metric"]] = r
    assert {"BLEU-1", "CIDEr", "vqa_accuracy"} <= set(by_eval["embedded captions + VQA"])
    assert 0 <= by_eval["embedded scenes k-NN"]["knn_acc"]["ours"] <= 100
    scenes = by_eval["embedded scenes by generation"]
    assert 0 <= scenes["generation_acc"]["ours"] <= 100 and "generation_mean_per_class" in scenes
    rsvqa = by_eval["RSVQA-LR"]
    assert rsvqa["vqa_average_accuracy"]["ours"] == pytest.approx(
        rsvqa["vqa_accuracy_presence"]["ours"]
    )
    # Aquila's Table 4 sits beside RSGPT's and GeoChat's count-excluded per-type means: the paper's
    # number and the table's baselines go beside vqa_average_accuracy, none beside vqa_accuracy.
    assert (
        rsvqa["vqa_average_accuracy"]["paper"] == 92.72 and rsvqa["vqa_accuracy"]["paper"] is None
    )
    assert rsvqa["vqa_average_accuracy"]["baselines"]["RSGPT"] == 92.29
    assert rsvqa["vqa_average_accuracy"]["baselines"]["GeoChat"] == 91.81
    assert not rsvqa["vqa_accuracy"]["baselines"]
    assert by_eval["RSICD captioning"]["BLEU-1"]["paper"] == 74.6
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| RSICD captioning | test | BLEU-1 |" in table and "74.60" in table


def test_evaluate_geopix_on_fake_referring_benchmarks(tmp_path: Path) -> None:
    override = _write(
        tmp_path / "small.yaml",
        {
            "data": {
                "init_args": {
                    "root": str(tmp_path / "data"),
                    "splits": {"train": 24, "val": 8, "test": 8},
                }
            }
        },
    )
    model = load_model([str(ROOT / "configs" / "geopix.yaml"), str(override)], None)
    evals = [
        _on_fake_data("rrsisd.yaml", root=str(ROOT / "tests/data/rrsisd"), batch_size=2),
        _on_fake_data("refsegrs.yaml", root=str(ROOT / "tests/data/refsegrs"), batch_size=2),
    ]
    rows = evaluate(model, evals, tmp_path / "out", device="cpu", limit_batches=1)
    metrics = {(r["evaluation"], r["metric"]): r["ours"] for r in rows}
    for name in ("RRSIS-D referring segmentation", "RefSegRS referring segmentation"):
        assert 0 <= metrics[(name, "mIoU")] <= 100 and 0 <= metrics[(name, "cIoU")] <= 100


def test_paper_baselines_sit_beside_the_paper_number() -> None:
    """SpaceNet1: FLAVARS 77.9 with MAE 74.3 and SkyCLIP-L/14 78.0 beside it."""
    from zoo.evaluation.results import markdown_table, result_rows

    (spacenet,) = load_evaluations([ROOT / "configs/eval/spacenet1_upernet.yaml"])
    assert spacenet.paper_numbers("FLAVARS") == {"miou": 77.9}
    from zoo.evaluation.base import baseline_numbers

    baselines = baseline_numbers(spacenet.paper, "FLAVARS")
    assert baselines == {"MAE": {"miou": 74.3}, "SkyCLIP-L/14": {"miou": 78.0}}
    rows = result_rows(spacenet, {"miou": 0.5}, None, spacenet.paper_numbers("FLAVARS"), baselines)
    assert rows[0]["baselines"] == {"MAE": 74.3, "SkyCLIP-L/14": 78.0}
    assert "| MAE 74.30, SkyCLIP-L/14 78.00 |" in markdown_table(rows)


def test_skyscript_table2_numbers_sit_beside_ours() -> None:
    """The SkyCLIP-50 zero-shot numbers of the SkyScript paper's Table 2 in the zero-shot configs:
    the seven out-of-domain scene datasets average to the table's own Avg. column (53.02 for
    ViT-B/32, 59.93 for ViT-L/14), a check on the transcription; no FLAVARS number is invented."""
    from zoo.evaluation.base import baseline_numbers

    scene = ["aid", "eurosat", "fmow", "millionaid", "patternnet", "resisc45", "rsicb256"]
    rows = {"SkyCLIP-50 ViT-B/32": 53.02, "SkyCLIP-50 ViT-L/14": 59.93}
    loaded = {
        name: load_evaluations([ROOT / "configs" / "eval" / f"{name}_zero_shot.yaml"])[0]
        for name in [*scene, "skyscript_cls", "roof_shape", "smoothness", "surface"]
    }
    for name, ev in loaded.items():
        assert ev.paper_numbers("FLAVARS") == {}, name
        assert set(baseline_numbers(ev.paper, "FLAVARS")) == set(rows), name
    for row, average in rows.items():
        values = [loaded[n].paper[row]["zero_shot_top1"] for n in scene]
        assert sum(values) / len(values) == pytest.approx(average, abs=0.006)
    assert loaded["roof_shape"].paper["SkyCLIP-50 ViT-L/14"] == {"zero_shot_top1": 46.83}
