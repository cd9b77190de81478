"""The CLI: every config parses, encoders swap from the command line, bad input is named."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from zoo.data import embedded
from zoo.main import main

ROOT = Path(__file__).parents[1]
# Run configs only: data blocks (configs/data), evaluations (configs/eval) and paper cards
# (configs/papers) have their own tests.
CONFIGS = sorted(
    str(p.relative_to(ROOT))
    for p in (ROOT / "configs").rglob("*.yaml")
    if p.parent.relative_to(ROOT / "configs").parts[:1] not in (("data",), ("eval",), ("papers",))
)
TINY_DATA = [
    "--data.init_args.splits.train=16",
    "--data.init_args.splits.val=8",
    "--data.init_args.splits.test=8",
]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])


#: Configs written as overrides of others (a later training stage, an ablation) parse composed on
#: them, left to right.
BASES = {
    "configs/aquila/stage2.yaml": ["configs/aquila/stage1.yaml"],
    "configs/geopix/stage2.yaml": ["configs/geopix/stage1.yaml"],
    "configs/strategy/fsdp.yaml": ["configs/fuse/stage1.yaml"],
    "configs/geopix/ablations/single_stage.yaml": ["configs/geopix/stage1.yaml"],
    **{
        c: ["configs/geopix/stage1.yaml", "configs/geopix/stage2.yaml"]
        for c in CONFIGS
        if c.startswith("configs/geopix/ablations/") and "single_stage" not in c
    },
    "configs/aquila/ablation_concat.yaml": ["configs/aquila/stage1.yaml"],
    "configs/aquila/ablation_concat_mda.yaml": ["configs/aquila/stage1.yaml"],
    "configs/aquila/ablation_sfi.yaml": ["configs/aquila/stage1.yaml"],
    "configs/aquila/location.yaml": ["configs/aquila.yaml"],
    "configs/fuse/stage2.yaml": ["configs/fuse/stage1.yaml"],
    "configs/flavars/skyscript_vitb16_no_location.yaml": ["configs/flavars/skyscript_vitb16.yaml"],
}


@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_parses(config, capsys):
    base = [arg for b in BASES.get(config, []) for arg in ("--config", b)]
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *base, "--config", config, "--print_config"])
    assert exit_.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("zoo.models.")
    assert resolved["data"]["class_path"].startswith("zoo.data.")


def _instantiate(*args: str):
    return main(["--config", "configs/flavars.yaml", *TINY_DATA, *args], run=False)


def test_links_and_short_names():
    cli = _instantiate()
    assert type(cli.model).__name__ == "FLAVARS"
    assert cli.model.class_names == list(embedded.SCENE_CLASSES)
    assert cli.model.tokenizer is cli.datamodule.tokenizer
    assert cli.model.hparams.image_size == cli.datamodule.image_size == 64


def test_swap_vision_encoder_from_command_line():
    cli = _instantiate("--model.init_args.vision.name=convnext_atto")
    assert type(cli.model.encoders.vision_encoder.model).__name__ == "ConvNeXt"


def test_configs_compose_left_to_right(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"model": {"init_args": {"embed_dim": 32}}}))
    cli = main(
        ["--config", "configs/flavars.yaml", "--config", str(override), *TINY_DATA], run=False
    )
    assert cli.model.encoders.image_projection.out_features == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.init_args.imag_encoder=vit_small_patch16_224"], "imag_encoder"),
        (["--model.init_args.embed_dim=wide"], "embed_dim"),
        (["--config", "configs/no-such-file.yaml"], "no-such-file.yaml"),
        (["--data.init_args.batch_size=-"], "batch_size"),
    ],
)
def test_bad_arguments_name_the_key(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--config", "configs/flavars.yaml", *args], run=False)
    assert exit_.value.code != 0
    assert message in capsys.readouterr().err


def test_unknown_encoder_name_is_explained():
    with pytest.raises(ValueError, match="unknown vision encoder 'vit_nonexistent'"):
        _instantiate("--model.init_args.vision.name=vit_nonexistent")


@pytest.mark.parametrize(
    "config", ["configs/aquila.yaml", "configs/fuse.yaml", "configs/geopix.yaml"]
)
def test_fit_then_predict_writes_answers(config, tmp_path):
    """The generators' README commands: fit, then predict from the checkpoint (weights only)."""
    if "geopix" in config:
        writer = {
            "class_path": "zoo.callbacks.MaskPredictionWriter",
            "init_args": {"output_dir": str(tmp_path / "answers")},
        }
    else:
        writer = {
            "class_path": "zoo.callbacks.PredictionWriter",
            "init_args": {"output_path": str(tmp_path / "answers.jsonl")},
        }
    override = tmp_path / "override.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 1,
                    "logger": False,
                    "enable_progress_bar": False,
                    "default_root_dir": str(tmp_path / "runs"),
                    "limit_train_batches": 2,
                    "limit_val_batches": 1,
                    "callbacks": [
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True},
                        },
                        writer,
                    ],
                },
                "model": {"init_args": {"generation": {"max_new_tokens": 3}}},
                "data": {
                    "init_args": {
                        "root": str(tmp_path / "data"),
                        "batch_size": 8,
                        "splits": {"train": 16, "val": 4, "test": 4},
                    }
                },
            }
        )
    )
    configs = ["--config", config, "--config", str(override)]
    main(["fit", *configs])
    checkpoint = tmp_path / "ckpt" / "last.ckpt"
    assert checkpoint.is_file()
    main(["predict", *configs, "--ckpt_path", str(checkpoint)])
    if (
        "geopix" in config
    ):  # a folder per sample: answer.json, mask_{k}.png (GeoJSON if georeferenced)
        rows = [p.read_text() for p in (tmp_path / "answers").glob("*/answer.json")]
    else:
        rows = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert rows and all(
        {"id", "question", "answer", "reference"} <= set(json.loads(r)) for r in rows
    )


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("evaluate", "--evals"),
        ("compare", "--suite"),
        ("export", "--ckpt_path"),
        ("embed", "--output"),
        ("demo", "--port"),
    ],
)
@pytest.mark.parametrize("from_argv", [False, True], ids=["args", "sys.argv"])
def test_evaluate_and_export_are_zoo_commands(command, option, from_argv, monkeypatch, capsys):
    """``zoo evaluate --help`` / ``zoo export --help`` (the console script reads sys.argv)."""
    with pytest.raises(SystemExit) as exit_:
        if from_argv:
            monkeypatch.setattr(sys, "argv", ["zoo", command, "--help"])
            main()
        else:
            main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: zoo {command}") and option in out


def test_zoo_help_names_evaluate_and_export(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the epilog anywhere
    assert "zoo evaluate" in out and "zoo export" in out and "fit" in out
    assert "zoo embed" in out and "zoo demo" in out and "zoo compare" in out
