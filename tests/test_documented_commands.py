"""Every ``zoo`` command shown in README.md and docs/*.md runs here, as written, in a folder that
looks like the repository (``configs/`` linked), through the real CLI, with overrides that
shrink the data, the steps and the answers; each check asserts what the text says the command
does (a file written, the checkpoint's weights used, a line printed).

The commands are read from the markdown (code blocks, and inline code that starts with ``zoo``
and has arguments): a command added to the docs without a check here fails
:func:`test_every_documented_command_has_a_check`. Commands that need GPUs, real datasets or
7B weights are listed in :data:`EXCLUDED` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml

from tests.faults import stub_demo_page
from tests.geotiffs import write_utm_geotiff
from zoo.data.geo_splits import continent_of
from zoo.main import main

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = "fit|validate|test|predict|evaluate|embed|export|demo|compare|optimize|stats"
_COMMAND = re.compile(rf"(?:^|\s)(?:python -m |-m )?(zoo (?:{SUBCOMMANDS})\s+\S.*)$")

#: Overrides that shrink a Trainer command (appended to the documented arguments).
SMALL_DATA = [
    "--data.init_args.splits.train=16",
    "--data.init_args.splits.val=8",
    "--data.init_args.splits.test=8",
    "--data.init_args.batch_size=8",
]
SHORT = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_predict_batches=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
]
SHORT_ANSWERS = ["--model.init_args.generation.max_new_tokens=3"]


def documented_commands() -> dict[str, str]:
    """Each ``zoo`` command of the docs (whitespace collapsed, ``python -m`` and comments
    dropped) and the file it is first shown in."""
    found: dict[str, str] = {}
    for path in DOCS:
        text = path.read_text()
        lines = []
        for block in re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S):
            joined = block.replace("\\\n", " ")
            lines += [re.sub(r"(^|\s+)#.*$", "", line) for line in joined.splitlines()]
        prose = re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")
        lines += re.findall(r"`([^`]+)`", prose)
        for line in lines:
            for part in line.split("&&"):
                match = _COMMAND.search(" ".join(part.split()))
                if match:
                    found.setdefault(match.group(1), path.name)
    return found


# ---------------------------------------------------------------- the folder the docs run in
class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def _logged() -> Iterator[list[str]]:
    """The messages the zoo and Lightning log (what the command line prints on stderr)."""
    handler = _Lines()
    loggers = [logging.getLogger(n) for n in ("zoo", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Iterator[Path]:
    """A folder like the repository (``configs`` linked) with ``my_tifs/`` (a UTM GeoTIFF);
    the umask is 022 while the module runs, so written files must be 0644."""
    root = tmp_path_factory.mktemp("docs")
    (root / "configs").symlink_to(ROOT / "configs")
    write_utm_geotiff(root / "my_tifs" / "s2.tif", nodata_corner=10)
    previous = os.umask(0o022)
    yield root
    os.umask(previous)


@pytest.fixture(autouse=True)
def _in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", ["zoo"])


def _argv(command: str) -> list[str]:
    """The command's arguments, ``...`` paths made concrete (the newest matching file)."""
    args = []
    for arg in shlex.split(command)[1:]:
        if "/.../" in arg:
            head, tail = arg.split("/.../")
            found = sorted(Path(head).rglob(tail), key=lambda p: p.stat().st_mtime_ns)
            assert found, f"nothing matches {arg}"
            arg = str(found[-1])
        args.append(arg)
    return args


def _run(command: str, *extra: str, run: bool = True) -> tuple[object, list[str]]:
    """Run a documented command with ``extra`` overrides; returns what ``main`` returns and the
    messages it logged."""
    import wandb

    args = [*_argv(command), *extra]
    with _logged() as lines:
        result = main(args) if run else main(args[1:], run=False)  # no subcommand: build only
    wandb.finish()
    return result, lines


_FITS: dict[str, tuple[object, list[str]]] = {}


def _fit(family: str) -> tuple[object, list[str], Path]:
    """The documented ``zoo fit --config configs/<family>.yaml``, once per module, shrunk."""
    if family not in _FITS:
        extra = [*SMALL_DATA, *SHORT] + (SHORT_ANSWERS if family != "flavars" else [])
        _FITS[family] = _run(f"zoo fit --config configs/{family}.yaml", *extra)
    cli, lines = _FITS[family]
    return cli, lines, Path("runs") / family / f"{family}-embedded" / "version_0"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_weights(seen: dict[str, torch.Tensor], checkpoint: Path) -> None:
    expected = _state(checkpoint)
    assert set(expected) <= set(seen)
    for key, value in expected.items():
        assert torch.equal(seen[key].cpu(), value), f"{key} is not {checkpoint}'s"


def _probe(cli) -> dict[str, dict[str, torch.Tensor]]:
    (probe,) = [c for c in cli.trainer.callbacks if type(c).__name__ == "WeightsProbe"]
    return probe.seen


PROBE = "--trainer.callbacks+=tests.faults.WeightsProbe"


# ---------------------------------------------------------------- FLAVARS
def check_flavars_fit(command: str) -> None:
    """README: trains, writes data/embedded on first use; the run folder holds last.ckpt,
    config.yaml and metrics.csv, all 0644 under umask 022, and the fit says where it is."""
    cli, lines, run = _fit("flavars")
    assert any(Path("data/embedded").iterdir())
    for name in ("checkpoints/last.ckpt", "config.yaml", "metrics.csv"):
        assert (run / name).is_file(), name
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o644, name
    assert f"run folder: {run}" in lines
    assert f"wrote checkpoints, metrics.csv and config.yaml to {run}" in lines
    assert cli.trainer.global_step == 2


def check_print_config(command: str, capsys) -> None:
    """README: prints the resolved config."""
    with pytest.raises(SystemExit) as exit_:
        main(_argv(command))
    assert exit_.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"] == "zoo.models.FLAVARS"
    assert resolved["data"]["init_args"]["root"] == "data/embedded"


def check_swap_vision_encoder(command: str) -> None:
    """README: the vision encoder is timm's ViT-S/16 (built, not trained here)."""
    cli, _ = _run(command, *SMALL_DATA, run=False)
    model = cli.model.encoders.vision_encoder.model
    assert type(model).__name__ == "VisionTransformer" and model.embed_dim == 384


def check_no_location_loss(command: str) -> None:
    """README: no location loss: the weight is 0 and a training step logs no location loss."""
    cli, _ = _run(
        command,
        *SMALL_DATA,
        *SHORT,
        "--trainer.logger=false",
        "--trainer.default_root_dir=runs/no-location",
    )
    assert cli.model.weights["location"] == 0
    logged = set(cli.trainer.logged_metrics)
    assert "train_contrastive_loss" in logged and "train_location_loss" not in logged


def check_test_last(command: str) -> None:
    """README: tests the newest checkpoint of the run (its weights, its metrics printed)."""
    _, _, run = _fit("flavars")
    newest = max(run.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    cli, _ = _run(command, *SMALL_DATA, PROBE)
    _assert_weights(_probe(cli)["test"], newest)
    assert any(k.startswith("test_") for k in cli.trainer.callback_metrics)


def check_resume(command: str) -> None:
    """README: resume: same folder, same W&B run, the step continues."""
    _, _, run = _fit("flavars")
    last = run / "checkpoints" / "last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=True)
    step, wandb_id = before["global_step"], before["callbacks"]["RunRecord"]["wandb_id"]
    extra = [*SMALL_DATA, *SHORT, f"--trainer.max_epochs={before['epoch'] + 2}", PROBE]
    cli, lines = _run(command, *extra)
    seen = _probe(cli)["fit"]
    assert all(torch.equal(seen[k], v) for k, v in before["state_dict"].items())
    assert cli.trainer.global_step == step + 2
    assert not run.with_name("version_1").exists()
    assert f"resuming run {run.resolve()}" in lines or f"resuming run {run}" in lines
    record = torch.load(last, map_location="cpu", weights_only=True)["callbacks"]["RunRecord"]
    assert record["wandb_id"] == wandb_id and record["version"] == 0


def check_embed(command: str, capsys) -> None:
    """README / your-own-data.md: a GeoParquet of embeddings with footprints (EPSG:4326)."""
    import geopandas as gpd

    _fit("flavars")
    Path("embeddings.parquet").unlink(missing_ok=True)
    _run(command, "--no_progress")
    frame = gpd.read_parquet("embeddings.parquet")
    assert len(frame) == 6 and frame.crs.to_epsg() == 4326  # the 96x160 file in 64-px chips
    assert frame.geometry.notna().all() and set(frame["path"]) == {"s2.tif"}
    assert stat.S_IMODE(Path("embeddings.parquet").stat().st_mode) == 0o644
    assert "wrote 6 rows to embeddings.parquet" in capsys.readouterr().out


def check_flavars_predict(command: str) -> None:
    """README: the embeddings of the last checkpoint -> runs/flavars/predictions.parquet, said so
    (issue 21: FLAVARS predict wrote nothing and said nothing)."""
    import pandas as pd

    _, _, run = _fit("flavars")
    Path("runs/flavars/predictions.parquet").unlink(missing_ok=True)
    cli, lines = _run(command, *SMALL_DATA, *SHORT, PROBE)
    newest = max(run.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    _assert_weights(_probe(cli)["predict"], newest)
    frame = pd.read_parquet("runs/flavars/predictions.parquet")
    assert len(frame) == 8 and {"caption", "lat", "lon"} <= set(frame.columns)
    for key in ("image", "text", "location"):
        vectors = torch.tensor(list(frame[f"{key}_embedding"]))
        assert vectors.shape == (8, 128)
        assert torch.allclose(vectors.norm(dim=-1), torch.ones(8), atol=1e-5)
    assert "wrote the embeddings of 8 samples to runs/flavars/predictions.parquet" in lines


@pytest.mark.slow
def check_evaluate_suite(command: str, capsys) -> None:
    """README / evaluation.md: results.md and results.json, the checkpoint named (one batch per
    split: the suite's own embedded data is generated at its full size)."""
    _fit("flavars")
    main([*_argv(command), "--limit_batches", "1"])
    results = Path("results/flavars")
    text = (results / "results.md").read_text()
    assert "runs/flavars/flavars-embedded/latest/checkpoints/last.ckpt" in text
    rows = json.loads((results / "results.json").read_text())
    assert rows
    assert "wrote results/flavars/results.md" in capsys.readouterr().out


@pytest.mark.slow
def check_evaluate_hallucination(command: str, capsys) -> None:
    """evaluation.md: the hallucination protocol prints CHAIR and POPE for a trained Aquila."""
    _fit("aquila")
    main([*_argv(command), "--limit_batches", "1"])
    out = capsys.readouterr().out
    assert "| chair_i |" in out and "| pope_adversarial_f1 |" in out


def check_evaluate_help(command: str, capsys) -> None:
    """README / evaluation.md: lists the protocols."""
    with pytest.raises(SystemExit) as exit_:
        main(_argv(command))
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(
        name in out for name in ("KNN", "LinearProbe", "ZeroShot", "Retrieval", "Segmentation")
    )


@pytest.mark.slow  # two interpreters importing the zoo: about 30 s on 2 cores
def check_evaluate_aliases(command: str) -> None:
    """evaluation.md: ``python -m zoo evaluate`` and ``python -m zoo.evaluate`` are the same
    command (compared by their help)."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    outs = [
        subprocess.run(
            [sys.executable, "-m", *m, "--help"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        for m in (["zoo", "evaluate"], ["zoo.evaluate"])
    ]
    assert outs[0] == outs[1] and outs[0].startswith("usage: zoo evaluate")


_GEO_FIT = "zoo fit --config configs/flavars.yaml --config configs/data/embedded_geo.yaml"
_GEO_EVALUATE = (
    "zoo evaluate --config configs/flavars.yaml --config configs/data/embedded_geo.yaml "
    "--ckpt_path runs/flavars/flavars-embedded/latest/checkpoints/last.ckpt "
    "--evals configs/eval/suites/flavars_geo.yaml --output results/flavars-geo"
)
#: Enough images that every geographic split of the continents config holds some.
_GEO_DATA = ["--data.init_args.splits.train=60", "--data.init_args.splits.val=20"]


def _geo_fit() -> tuple[object, list[str]]:
    if "geo" not in _FITS:
        _FITS["geo"] = _run(_GEO_FIT, *SMALL_DATA, *_GEO_DATA, *SHORT)
    return _FITS["geo"]


@pytest.mark.slow
def check_geo_fit(command: str) -> None:
    """evaluation.md: FLAVARS trains on the continents split (Africa held out), the log says so
    (the command with the measured run's sizes, once shrunk, is the same run: shared)."""
    cli, lines = _geo_fit()
    assert any(line.startswith("geographic train split (continents)") for line in lines)
    table = cli.datamodule.train_dataset.table
    assert len(table) and (continent_of(table["lat"], table["lon"]) != "africa").all()


@pytest.mark.slow
def check_geo_generator_fit(command: str) -> None:
    """evaluation.md: Aquila trains on the conversations' continents split (images joined to
    their coordinates from the embedded tables), the log says so."""
    cli, lines = _run(command, *SMALL_DATA, *_GEO_DATA, *SHORT, *SHORT_ANSWERS)
    assert any(
        line.startswith("geographic train split (continents) of EmbeddedConversationDataModule")
        for line in lines
    )
    assert cli.trainer.global_step == 2


@pytest.mark.slow
def check_geo_evaluate(command: str, capsys) -> None:
    """evaluation.md: the in-region and held-out results side by side with the gap, also in
    geo_shift.md (one batch per split: the suite's own embedded data is generated at full size)."""
    _geo_fit()
    main([*_argv(command), "--limit_batches", "1"])
    printed = capsys.readouterr().out
    assert "| evaluation | protocol | metric | in-region | held-out | gap |" in printed
    assert "| embedded geo zero-shot | zero_shot | zero_shot_top1 |" in printed
    assert Path("results/flavars-geo/geo_shift.md").read_text() in printed


# ---------------------------------------------------------------- Aquila
def check_aquila_fit(command: str) -> None:
    """README: Aquila trains on captions + VQA; its run folder holds last.ckpt."""
    cli, lines, run = _fit("aquila")
    assert (run / "checkpoints" / "last.ckpt").is_file() and f"run folder: {run}" in lines
    tasks = {t for b in [cli.datamodule.train_dataset[i] for i in range(8)] for t in [b["task"]]}
    assert {"caption", "vqa"} <= tasks


def _aquila_predict() -> tuple[object, list[str]]:
    _fit("aquila")
    Path("runs/aquila/predictions.jsonl").unlink(missing_ok=True)
    return _run(
        "zoo predict --config configs/aquila.yaml --ckpt_path last",
        *SMALL_DATA,
        *SHORT,
        *SHORT_ANSWERS,
        PROBE,
    )


def check_aquila_predict(command: str) -> None:
    """README: the last checkpoint's answers -> runs/aquila/predictions.jsonl (said so)."""
    cli, lines = _aquila_predict()
    _assert_weights(
        _probe(cli)["predict"], Path("runs/aquila/aquila-embedded/version_0/checkpoints/last.ckpt")
    )
    rows = [json.loads(r) for r in Path("runs/aquila/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all({"id", "question", "answer", "reference"} <= set(r) for r in rows)
    assert "wrote 8 predictions to runs/aquila/predictions.jsonl" in lines


def check_aquila_predict_overwrite(command: str) -> None:
    """README: replace earlier answers: refused without --overwrite, done with it."""
    _aquila_predict()
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        _run(command.replace(" --overwrite", ""), *SMALL_DATA, *SHORT, *SHORT_ANSWERS)
    before = Path("runs/aquila/predictions.jsonl").stat().st_mtime_ns
    _run(command, *SMALL_DATA, *SHORT, *SHORT_ANSWERS)
    assert Path("runs/aquila/predictions.jsonl").stat().st_mtime_ns > before


def check_aquila_export(command: str) -> None:
    """README / evaluation.md: the self-contained folder, model.safetensors the checkpoint's
    weights, and config.yaml."""
    from safetensors.torch import load_file

    _fit("aquila")
    shutil.rmtree("export", ignore_errors=True)
    main(_argv(command))
    exported = load_file("export/model.safetensors")
    expected = _state(Path("runs/aquila/aquila-embedded/latest/checkpoints/last.ckpt"))
    for key, value in exported.items():
        assert torch.equal(value, expected[key]), key
    for key in set(expected) - set(exported):  # a tied tensor is written once (safetensors)
        assert any(torch.equal(expected[key], v) for v in exported.values()), key
    assert (Path("export") / "config.yaml").is_file()
    for name in ("config.json", "preprocessor_config.json", "tokenizer.json"):
        assert (Path("export") / name).is_file(), name
    assert stat.S_IMODE(Path("export/model.safetensors").stat().st_mode) == 0o644


def _evaluated_results(path: Path) -> None:
    """A ``results.json`` as ``zoo evaluate --output results`` writes it (its own writer)."""
    import types

    from zoo.evaluation.results import result_rows, write_results

    evaluation = types.SimpleNamespace(
        name="Embedded zero-shot", protocol="zero_shot", source="", path="embedded_zero_shot.yaml"
    )
    write_results(result_rows(evaluation, {"zero_shot_top1": 0.5}, None, {}), path.parent)


def check_flavars_card(command: str) -> None:
    """sharing.md: the self-contained folder with a model card that huggingface_hub parses,
    its model-index from results.json."""
    from huggingface_hub import ModelCard

    _fit("flavars")
    _evaluated_results(Path("results/results.json"))
    shutil.rmtree("export", ignore_errors=True)
    try:
        main(_argv(command))
        card = ModelCard.load("export/README.md")
        assert card.data.license == "apache-2.0" and card.data.library_name == "rs-vlm-zoo"
        (result,) = card.data.eval_results
        assert result.metric_type == "zero_shot_top1" and result.metric_value == 50.0
        assert (Path("export") / "tokenizer.json").is_file()
    finally:
        shutil.rmtree("export", ignore_errors=True)  # export/ is Aquila's in the other checks


def check_flavars_push(command: str, monkeypatch) -> None:
    """sharing.md: --push_to_hub uploads the folder and its card (to a stand-in for the Hub)."""
    from tests.hub_standin import HubStandIn

    _fit("flavars")
    shutil.rmtree("export", ignore_errors=True)
    try:
        with HubStandIn() as hub:
            monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
            monkeypatch.setenv("HF_TOKEN", "hf_stand_in")
            main(_argv(command))
        sent = hub.repos["org/flavars-rs"]["files"]
        assert sent == {p.name: p.read_bytes() for p in Path("export").iterdir()}
        assert "README.md" in sent and "model.safetensors" in sent
    finally:
        shutil.rmtree("export", ignore_errors=True)


def check_evaluate_export(command: str, monkeypatch) -> None:
    """evaluation.md: an export evaluates from its own config.yaml and safetensors file."""
    import zoo.evaluation.cli as evaluate_cli

    if not Path("export/model.safetensors").is_file():
        check_aquila_export(
            "zoo export --config configs/aquila.yaml --ckpt_path "
            "runs/aquila/aquila-embedded/latest/checkpoints/last.ckpt --output export/"
        )
    seen = {}
    monkeypatch.setattr(
        evaluate_cli, "evaluate", lambda model, *a, **k: seen.update(model.state_dict()) or []
    )
    main(
        [
            *_argv(command.replace(" ...", "")),
            "--evals",
            "configs/eval/embedded_generation.yaml",
            "--output",
            "results/export",
        ]
    )
    from safetensors.torch import load_file

    for key, value in load_file("export/model.safetensors").items():
        assert torch.equal(seen[key], value), key


def check_aquila_images(command: str) -> None:
    """your-own-data.md: answers for each chip of my_tifs, with its path and footprint."""
    from shapely.geometry import shape

    _fit("aquila")
    Path("runs/aquila/predictions.jsonl").unlink(missing_ok=True)
    _run(command, *SHORT_ANSWERS, "--trainer.enable_progress_bar=false")
    rows = [json.loads(r) for r in Path("runs/aquila/predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(
        r["path"] == "s2.tif" and shape(r["footprint"]).is_valid for r in rows
    )


# ---------------------------------------------------------------- FUSE
def check_fuse_fit(command: str) -> None:
    """README: FUSE trains (windows + injection); its run folder holds last.ckpt."""
    cli, lines, run = _fit("fuse")
    assert (run / "checkpoints" / "last.ckpt").is_file() and f"run folder: {run}" in lines
    assert cli.model.inject_layers


# ---------------------------------------------------------------- GeoPix
@pytest.fixture
def answers_the_building(monkeypatch):
    """The tiny LLM answers "sure, the building is [SEG...]" (an untrained one may never write a
    segmentation phrase, and then there is no mask to write)."""
    from transformers import LlamaForCausalLM

    from zoo.data.images import ImageFolderDataModule
    from zoo.data.referring import seg_phrase

    tokenizer = ImageFolderDataModule(task="referring").tokenizer
    answer = tokenizer(f"sure, the building is {seg_phrase(2, 3)} [EOS]", add_special_tokens=False)

    def generate(self, inputs_embeds, attention_mask, **kwargs):
        return torch.tensor(answer["input_ids"]).repeat(len(inputs_embeds), 1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)


def check_geopix_fit(command: str) -> None:
    """README: GeoPix trains (answers with masks); its run folder holds last.ckpt."""
    _, lines, run = _fit("geopix")
    assert (run / "checkpoints" / "last.ckpt").is_file() and f"run folder: {run}" in lines


def check_geopix_predict(command: str, answers_the_building) -> None:
    """README: -> answer.json, mask PNGs, GeoJSON per sample, with the last checkpoint."""
    _fit("geopix")
    shutil.rmtree("runs/geopix/predictions", ignore_errors=True)
    cli, lines = _run(command, *SMALL_DATA, *SHORT, PROBE)
    _assert_weights(
        _probe(cli)["predict"], Path("runs/geopix/geopix-embedded/version_0/checkpoints/last.ckpt")
    )
    folders = sorted(p for p in Path("runs/geopix/predictions").iterdir() if p.is_dir())
    assert len(folders) == 8
    for folder in folders:
        record = json.loads((folder / "answer.json").read_text())
        assert record["masks"] == ["mask_0.png"] and (folder / "mask_0.png").is_file()
        features = json.loads((folder / "masks.geojson").read_text())["features"]
        assert [f["properties"]["category"] for f in features] == ["building"]
    assert "wrote the answers and masks of 8 samples to runs/geopix/predictions/<id>/" in lines


def check_geopix_images(command: str, answers_the_building) -> None:
    """README / your-own-data.md: GeoJSON in EPSG:4326 per file and one merged GeoParquet."""
    import geopandas as gpd

    _fit("geopix")
    shutil.rmtree("runs/geopix/predictions", ignore_errors=True)
    _, lines = _run(command, "--trainer.enable_progress_bar=false")
    out = Path("runs/geopix/predictions")
    collection = json.loads((out / "s2" / "masks.geojson").read_text())
    (feature,) = collection["features"]
    assert feature["properties"] | {"target": 0} == {
        "target": 0,
        "category": "building",
        "phrase": "the building",
        "image": "s2.tif",
    }
    record = json.loads((out / "s2" / "answer.json").read_text())
    if "--data.init_args.prompt" in command:
        assert record["question"] == "Please segment the building."
    merged = gpd.read_parquet(out / "masks.parquet")
    assert merged.crs.to_epsg() == 4326 and list(merged["image"]) == ["s2.tif"]
    assert stat.S_IMODE((out / "masks.parquet").stat().st_mode) == 0o644
    assert any(line.endswith(f"every feature in {out / 'masks.parquet'}") for line in lines)


def check_geopix_demo(command: str, monkeypatch) -> None:
    """README: the demo serves the checkpoint's model (the page is built, not served; Gradio is
    replaced where it is not installed)."""
    import zoo.demo

    _, _, run = _fit("geopix")
    served = stub_demo_page(monkeypatch)
    last = run / "checkpoints" / "last.ckpt"
    zoo.demo.main(_argv(command.replace("...", str(last)))[1:], block=False)
    _assert_weights(served["weights"], last)


# ---------------------------------------------------------------- streaming (issue 25)
_OPTIMIZE = "zoo optimize --config configs/flavars.yaml --output shards/embedded --workers 4"


def check_streaming_fit(command: str) -> None:
    """docs/training.md: ``zoo optimize`` writes the shards (and their manifest), then a fit
    reads them with ``--data.init_args.streaming`` (both shrunk alike)."""
    if not (Path("shards/embedded") / "manifest.json").is_file():
        main([*_argv(_OPTIMIZE), *SMALL_DATA])
    assert (Path("shards/embedded") / "manifest.json").is_file()
    if command == _OPTIMIZE:
        return
    cli, _ = _run(command, *SMALL_DATA, *SHORT, "--trainer.default_root_dir=runs/streamed")
    assert type(cli.trainer.train_dataloader).__name__ == "StreamingLoader"
    assert cli.trainer.global_step == 2


check_streaming_fit.pytestmark = [pytest.mark.slow]  # a conversion and a fit: over 30 s


# ---------------------------------------------------------------- location token (issue 26)
_LOCATION_FIT = "zoo fit --config configs/aquila.yaml --config configs/aquila/location.yaml"


def check_location_fit(command: str) -> None:
    """docs/evaluation.md: the location token on Aquila, trained from scratch or (with a FLAVARS
    checkpoint) its location encoder frozen, tensor for tensor; the location questions train."""
    extra = [*SMALL_DATA, *SHORT, *SHORT_ANSWERS, "--trainer.default_root_dir=runs/location"]
    if "location.checkpoint" in command:
        _fit("flavars")
    cli, _ = _run(command, *extra)
    token = cli.model.location_token
    tasks = {
        cli.datamodule.train_dataset[i]["task"] for i in range(len(cli.datamodule.train_dataset))
    }
    assert "location" in tasks and cli.trainer.global_step == 2
    if "location.checkpoint" not in command:
        assert all(p.requires_grad for p in token.encoder.parameters())
        return
    flavars = _state(Path(_argv(command)[-1]))
    theirs = {
        k[len("location_encoder.") :]: v
        for k, v in flavars.items()
        if k.startswith("location_encoder.")
    }
    mine = token.encoder.state_dict()
    assert theirs and mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k].cpu(), v) for k, v in theirs.items())
    assert not any(p.requires_grad for p in token.encoder.parameters())


# ---------------------------------------------------------------- band statistics (issue 24)
def check_stats(command: str) -> None:
    """docs/your-own-data.md: ``zoo stats`` writes one mean and std per band of the
    multispectral embedded data (R, G, B, NIR, SWIR) into its root."""
    path = main([*_argv(command), *SMALL_DATA[:1], "--no_progress"])
    stats = json.loads(Path(path).read_text())
    assert Path(path).name == "band_stats.json"
    assert Path(path).resolve().is_relative_to(Path("data").resolve())
    assert stats["bands"] == ["R", "G", "B", "NIR", "SWIR"]
    assert len(stats["mean"]) == len(stats["std"]) == 5 and min(stats["std"]) > 0


# ---------------------------------------------------------------- what runs elsewhere
_GPUS = "needs GPUs (8 per node, several nodes); the config itself is parsed by tests/test_cli.py"
_REAL = "needs the real dataset; its datamodule is tested on fake files in tests/data/"
_PLACEHOLDER = "a placeholder for the reader's own config; zoo stats runs on a real one in "
EXCLUDED: dict[str, str] = {
    "zoo stats --config <your config>": _PLACEHOLDER + "check_stats and tests/test_bands_cli.py",
    "zoo optimize --config configs/aquila/stage1.yaml --config configs/aquila/stage2.yaml "
    "--output s3://bucket/fit_rs --workers 32": "an object store and the real data; s3:// runs "
    "against moto in tests/data/test_streaming.py",
    "zoo fit --config configs/aquila/stage1.yaml --config configs/aquila/stage2.yaml "
    "--data.init_args.streaming s3://bucket/fit_rs": "an object store and " + _GPUS,
    "zoo fit --config configs/flavars/skyscript_vitb16.yaml": "8 GPUs and SkyScript: " + _GPUS,
    "zoo fit --config configs/aquila/stage1.yaml": "Llama-3-8B and CLIP-ConvNeXt-XXL weights: "
    + _GPUS,
    "zoo fit --config configs/aquila/stage1.yaml --config configs/aquila/stage2.yaml": "Llama-3-8B and CLIP-ConvNeXt-XXL weights: "
    + _GPUS,
    "zoo fit --config configs/flavars.yaml --config configs/data/skyscript.yaml": _REAL,
    "zoo fit --config configs/aquila.yaml --config configs/data/rsvqa_lr.yaml "
    "--model.init_args.question_types='[count, presence, comp, rural_urban]'": _REAL,
    "zoo fit --config configs/geopix.yaml --config configs/data/rrsisd.yaml": _REAL,
    "zoo fit --config configs/fuse/stage1.yaml --config configs/strategy/fsdp.yaml "
    "--trainer.num_nodes=4 --trainer.devices=8 --trainer.accumulate_grad_batches=1": _GPUS,
    "zoo fit --config configs/aquila/stage1.yaml --trainer.num_nodes=4 --trainer.devices=8": _GPUS,
    "zoo fit --config configs/geopix/stage1.yaml --trainer.num_nodes=4 --trainer.devices=8": _GPUS,
    "zoo export --ckpt_path <folder>": "an FSDP sharded folder needs GPUs; tests/distributed "
    "export one where GPUs are present",
    "zoo compare --suite configs/eval/suites/flavars_le_ablation.yaml --ckpt_path "
    '"FLAVARS +LE=..." --ckpt_path "FLAVARS=..."': "12 real scene benchmarks and FLAVA / SatCLIP "
    "weights (docs/evaluation.md); zoo compare runs in tests/test_evaluate.py",
    "zoo compare --suite configs/eval/suites/flavars_le_ablation.yaml --ckpt_path "
    '"FLAVARS +LE=runs/.../le.ckpt" --ckpt_path "FLAVARS=runs/.../no_le.ckpt" '
    "--output results/flavars-le-ablation": "12 real scene benchmarks and FLAVA / SatCLIP weights "
    "(docs/evaluation.md); zoo compare runs in tests/test_evaluate.py",
}

_EXPORT = (
    "zoo export --config configs/aquila.yaml --ckpt_path "
    "runs/aquila/aquila-embedded/latest/checkpoints/last.ckpt --output export/"
)
_SUITE = (
    "zoo evaluate --config configs/flavars.yaml --ckpt_path "
    "runs/flavars/flavars-embedded/latest/checkpoints/last.ckpt --evals "
    "configs/eval/suites/flavars_embedded.yaml --output results/flavars"
)
CHECKS: dict[str, Callable[..., None]] = {
    _LOCATION_FIT: check_location_fit,
    _LOCATION_FIT + " --model.init_args.location.checkpoint "
    "runs/flavars/flavars-embedded/latest/checkpoints/last.ckpt": check_location_fit,
    "zoo stats --config configs/flavars_multispectral.yaml": check_stats,
    "zoo fit --config configs/flavars.yaml": check_flavars_fit,
    "zoo fit --config configs/flavars.yaml --print_config": check_print_config,
    "zoo fit --config configs/flavars.yaml --model.init_args.vision.name=vit_small_patch16_224": check_swap_vision_encoder,
    "zoo fit --config configs/flavars.yaml --model.init_args.objectives.loss_weights.location=0": check_no_location_loss,
    "zoo test --config configs/flavars.yaml --ckpt_path last": check_test_last,
    "zoo predict --config configs/flavars.yaml --ckpt_path last": check_flavars_predict,
    "zoo fit --config configs/flavars.yaml --ckpt_path last": check_resume,
    "zoo embed --config configs/flavars.yaml --config configs/data/images.yaml --data.init_args.root "
    "my_tifs --ckpt_path runs/flavars/.../last.ckpt --output embeddings.parquet": check_embed,
    _SUITE: check_evaluate_suite,
    _GEO_FIT: check_geo_fit,
    _GEO_FIT + " --data.init_args.splits.train=600 --data.init_args.splits.val=100 "
    "--data.init_args.splits.test=100 --trainer.max_epochs=4": check_geo_fit,
    "zoo fit --config configs/aquila.yaml --config configs/data/embedded_conversations_geo.yaml "
    "--trainer.max_epochs=4 --trainer.check_val_every_n_epoch=2 --trainer.num_sanity_val_steps=0 "
    "--trainer.limit_val_batches=2 --model.init_args.val_generate_batches=1": check_geo_generator_fit,
    _GEO_EVALUATE: check_geo_evaluate,
    "zoo evaluate --help": check_evaluate_help,
    "zoo evaluate ...": check_evaluate_aliases,
    "zoo fit --config configs/aquila.yaml": check_aquila_fit,
    "zoo predict --config configs/aquila.yaml --ckpt_path last": check_aquila_predict,
    "zoo predict --config configs/aquila.yaml --ckpt_path last --overwrite": check_aquila_predict_overwrite,
    _EXPORT: check_aquila_export,
    "zoo export --config configs/aquila.yaml --ckpt_path last --output export/": check_aquila_export,
    "zoo export --config configs/flavars.yaml --ckpt_path last --output export/ --format hf "
    "--results results/results.json --license apache-2.0": check_flavars_card,
    "zoo export --config configs/flavars.yaml --ckpt_path last --output export/ --push_to_hub "
    "org/flavars-rs --license apache-2.0": check_flavars_push,
    "zoo evaluate --config export/config.yaml --ckpt_path export/model.safetensors ...": check_evaluate_export,
    "zoo predict --config configs/aquila.yaml --config configs/data/images.yaml --data.init_args.root "
    "my_tifs --data.init_args.task conversation --ckpt_path runs/aquila/.../last.ckpt": check_aquila_images,
    "zoo fit --config configs/fuse.yaml": check_fuse_fit,
    "zoo evaluate --config configs/aquila.yaml --ckpt_path "
    "runs/aquila/aquila-embedded/latest/checkpoints/last.ckpt --evals "
    "configs/eval/embedded_hallucination.yaml --output results/aquila_hallucination": check_evaluate_hallucination,
    "zoo fit --config configs/geopix.yaml": check_geopix_fit,
    "zoo predict --config configs/geopix.yaml --ckpt_path last": check_geopix_predict,
    "zoo predict --config configs/geopix.yaml --config configs/data/images.yaml --data.init_args.root "
    "my_tifs --data.init_args.task referring --ckpt_path runs/geopix/.../last.ckpt": check_geopix_images,
    "zoo predict --config configs/geopix.yaml --config configs/data/images.yaml --data.init_args.root "
    'my_tifs --data.init_args.task referring --data.init_args.prompt "Please segment the building." '
    "--ckpt_path runs/geopix/.../last.ckpt": check_geopix_images,
    "zoo demo --config configs/geopix.yaml --ckpt_path ...": check_geopix_demo,
    _OPTIMIZE: check_streaming_fit,
    "zoo fit --config configs/flavars.yaml --data.init_args.streaming shards/embedded": check_streaming_fit,
}


def test_every_documented_command_has_a_check():
    """A command shown in the docs is either checked here or excluded with a reason; neither
    list keeps a command the docs no longer show."""
    shown = documented_commands()
    unchecked = sorted(set(shown) - set(CHECKS) - set(EXCLUDED))
    assert not unchecked, f"documented commands without a check (add one to CHECKS): {unchecked}"
    stale = sorted((set(CHECKS) | set(EXCLUDED)) - set(shown))
    assert not stale, f"checks of commands the docs no longer show: {stale}"
    assert not set(CHECKS) & set(EXCLUDED)


def _fixtures(check: Callable[..., None]) -> list[str]:
    import inspect

    return [p for p in inspect.signature(check).parameters if p != "command"]


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, id=c[:90], marks=getattr(f, "pytestmark", [])) for c, f in CHECKS.items()],
)
def test_documented_command(command, request):
    check = CHECKS[command]
    check(command, **{name: request.getfixturevalue(name) for name in _fixtures(check)})


def test_embed_of_a_missing_folder_prints_one_line(monkeypatch, capsys):
    """``zoo embed`` with a folder that does not exist: one line, as ``zoo predict`` (issue 21)."""
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "zoo",
            "embed",
            "--config",
            "configs/flavars.yaml",
            "--config",
            "configs/data/images.yaml",
            "--data.init_args.root",
            "no_such_folder",
            "--output",
            "x.parquet",
        ],
    )
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "Traceback" not in err
    # Besides the warning that no checkpoint was given: the message and the --traceback hint.
    lines = [line for line in err.strip().splitlines() if not line.startswith("WARNING")]
    assert len(lines) == 2 and lines[0].startswith(
        "zoo: error: image folder no_such_folder does not exist"
    )
