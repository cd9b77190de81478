"""A trained model carries what inference needs (issue 23): the checkpoint's ``zoo`` entry, the
image transform, and the Python API around them (``zoo.load``, ``list_models``,
``create_model``), checked after one tiny FLAVARS fit."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import zoo
from tests.checkpoint_layouts import materialize
from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD
from zoo.data.datamodules import Normalize
from zoo.data.image_text import load_image
from zoo.main import main
from zoo.model_contents import CONTENTS_KEY, ModelContents, tokenizer_from_files
from zoo.models import FLAVARS, GeoPix
from zoo.preprocessing import ImageTransform, Preprocessing, pad_to_square

ROOT = Path(__file__).parents[1]
CONFIG = ROOT / "configs" / "flavars.yaml"
#: Statistics no default has, so a checkpoint that stored the defaults would be caught.
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


@pytest.fixture(autouse=True)
def _argv(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.chdir(tmp_path)


def _settings(folder: Path) -> dict:
    return {
        "trainer": {
            "max_epochs": 1,
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "enable_progress_bar": False,
            "default_root_dir": str(folder / "runs"),
            "logger": False,
        },
        "data": {
            "init_args": {
                "root": str(folder / "data"),
                "batch_size": 8,
                "splits": {"train": 16, "val": 8, "test": 8},
                "mean": MEAN,
                "std": STD,
            }
        },
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny FLAVARS fit with unusual normalization statistics."""
    folder = tmp_path_factory.mktemp("contents")
    override = folder / "override.yaml"
    override.write_text(yaml.safe_dump(_settings(folder)))
    cli = main(["fit", "--config", str(CONFIG), "--config", str(override)])
    (last,) = (folder / "runs").rglob("last.ckpt")
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    return types.SimpleNamespace(
        folder=folder, override=override, last=last, checkpoint=checkpoint, cli=cli
    )


# ------------------------------------------------------------------------- preprocessing
def test_preprocessing_rejects_inconsistent_statistics():
    with pytest.raises(ValueError, match="mean has 3 bands but std has 2"):
        Preprocessing(64, (0.5, 0.5, 0.5), (0.2, 0.2))
    with pytest.raises(ValueError, match="std must be > 0"):
        Preprocessing(64, (0.5,), (0.0,))
    with pytest.raises(ValueError, match="bands names 2 bands"):
        Preprocessing(64, (0.5,) * 3, (0.2,) * 3, bands=("red", "nir"))
    with pytest.raises(ValueError, match="unknown"):  # an unknown stored key names itself
        Preprocessing.from_dict({"image_size": 64, "colour": "rgb"})


def test_transform_equals_the_loaders_functions(tmp_path):
    """A non-square PNG through the transform equals the loaders' own steps: read, pad to a
    square of the mean colour, antialiased bilinear resize, normalize on the device."""
    rng = np.random.default_rng(0)
    path = tmp_path / "wide.png"
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(path)
    pre = Preprocessing(24, MEAN, STD, pad_to_square=True)
    got = ImageTransform(pre)(Image.open(path))
    pixels = pad_to_square(load_image(path), [m * 255 for m in MEAN])
    pixels = torch.nn.functional.interpolate(
        pixels[None], size=(24, 24), mode="bilinear", antialias=True
    )
    expected = Normalize(MEAN, STD)({"image": pixels})["image"][0]
    assert got.shape == (3, 24, 24)
    torch.testing.assert_close(got, expected)
    # the same image as a C×H×W array, and as a uint8 tensor
    array = np.asarray(Image.open(path)).transpose(2, 0, 1)
    torch.testing.assert_close(ImageTransform(pre)(array), expected)
    torch.testing.assert_close(ImageTransform(pre)(torch.from_numpy(array.copy())), expected)


def test_transform_names_what_is_wrong_with_an_image():
    transform = ImageTransform(Preprocessing(16))
    grey = transform(Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)))
    assert grey.shape == (3, 16, 16)
    # the one band repeated to R, G, B, then each normalized by its own statistics
    expected = (100.0 - torch.tensor(IMAGENET_MEAN) * 255) / (torch.tensor(IMAGENET_STD) * 255)
    torch.testing.assert_close(grey[:, 0, 0], expected)
    with pytest.raises(ValueError, match=r"4 bands but the model reads 3"):
        transform(np.zeros((4, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="transpose it to C×H×W"):
        transform(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="one C×H×W image"):
        transform(np.zeros((2, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match="PIL image or a C×H×W array"):
        transform("image.png")


# ------------------------------------------------------------------- checkpoint contents
def test_checkpoint_carries_the_datas_preprocessing_tokenizer_and_config(run):
    contents = ModelContents.from_checkpoint(run.checkpoint)
    assert contents is not None and run.checkpoint[CONTENTS_KEY]["format"] == 1
    assert contents.model_class.endswith("FLAVARS")
    # the data's statistics, not a default: the model kept them from the fit
    assert contents.preprocessing == Preprocessing(64, MEAN, STD)
    datamodule = run.cli.datamodule
    assert contents.class_names == datamodule.class_names
    tokenizer = tokenizer_from_files(contents.tokenizer_files)
    text = "a satellite image of farmland near a river."
    assert tokenizer(text)["input_ids"] == datamodule.tokenizer(text)["input_ids"]
    assert len(tokenizer) == len(datamodule.tokenizer)
    config = yaml.safe_load(contents.config)
    assert config["model"]["class_path"].endswith("FLAVARS")
    assert config["data"]["init_args"]["mean"] == MEAN
    assert contents.zoo_version == zoo.__version__


def test_load_from_checkpoint_alone_equals_the_trained_weights(run):
    model = FLAVARS.load_from_checkpoint(run.last)
    assert not model.training and model.preprocessing == Preprocessing(64, MEAN, STD)
    state = run.checkpoint["state_dict"]
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_load_from_checkpoint_of_another_family_names_both(run):
    with pytest.raises(ValueError, match="holds a FLAVARS, not a GeoPix"):
        GeoPix.load_from_checkpoint(run.last)


def test_zoo_load_gives_model_transform_and_tokenizer(run, tmp_path):
    model, transform, tokenizer = zoo.load(run.last)
    assert isinstance(model, FLAVARS) and not model.training
    assert transform.preprocessing == Preprocessing(64, MEAN, STD)
    assert tokenizer.get_vocab() == run.cli.datamodule.tokenizer.get_vocab()
    folder = zoo.save_pretrained(model, tmp_path / "export")
    again, transform_again, _ = zoo.load(folder)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8))
    x = transform(image)[None]
    torch.testing.assert_close(transform_again(image)[None], x)
    with torch.no_grad():
        torch.testing.assert_close(again.image_features(x), model.image_features(x))
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["class_path"]


def test_zoo_load_names_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt does not exist"):
        zoo.load(tmp_path / "nowhere.ckpt")


def test_an_older_checkpoint_loads_through_its_run_config(run, tmp_path):
    """A zoo 0.1 checkpoint has no contents: without a config the error says what to pass;
    with the run's config it loads, its weights intact."""
    old = tmp_path / "run" / "version_0" / "checkpoints" / "old.ckpt"
    old.parent.mkdir(parents=True)
    expected = materialize(ROOT / "tests" / "data" / "checkpoints_0_1" / "flavars.json", old)
    assert CONTENTS_KEY not in torch.load(old, weights_only=True)
    with pytest.raises(ValueError, match=r"config=<the run's config.yaml>"):
        zoo.load(old)
    with pytest.raises(ValueError, match="written before zoo checkpoints"):
        FLAVARS.load_from_checkpoint(old)
    model, transform, _ = zoo.load(old, config=[CONFIG, run.override])
    assert transform.preprocessing == Preprocessing(64, MEAN, STD)  # from the run's data
    state = FLAVARS.upgrade_state_dict(expected)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    # the config beside the checkpoint is found without being named
    config = yaml.safe_load(CONFIG.read_text())
    for path in (run.override,):
        extra = yaml.safe_load(path.read_text())
        config["data"]["init_args"] |= extra["data"]["init_args"]
    (old.parent.parent / "config.yaml").write_text(yaml.safe_dump(config))
    assert isinstance(zoo.load(old)[0], FLAVARS)


# ------------------------------------------------------------------------ named configs
def test_list_models_names_every_family_and_variant_only():
    names = zoo.list_models()
    for name in ["flavars", "aquila", "fuse", "geopix", "aquila/stage1", "geopix/stage2"]:
        assert name in names
    assert not any(n.split("/")[0] in ("data", "eval", "papers", "strategy") for n in names)
    assert all((ROOT / "configs" / f"{n}.yaml").is_file() for n in names)


def test_create_model_applies_overrides_and_the_datas_preprocessing(tmp_path):
    model = zoo.create_model("flavars", embed_dim=32, location={"hidden": 64}, image_size=64)
    assert isinstance(model, FLAVARS)
    assert model.hparams.embed_dim == 32 and model.encoders.embed_dim == 32
    assert model.hparams.location["hidden"] == 64
    assert model.location_encoder.nnet.layers[0].dim_out == 64  # built with the override
    assert model.preprocessing == Preprocessing(64)
    with pytest.raises(ValueError, match="no model config 'flavar'.*'flavars'"):
        zoo.create_model("flavar")
