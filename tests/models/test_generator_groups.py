"""Issue 22: the generators' typed groups, the contracts of the core, and the old flat keys.

The core builds the LLM, calls the family's ``configure_models`` and applies the training stage
itself; freezing follows the groups the family declares; zoo 0.1's flat keys map into the groups
(checkpoints through ``upgrade_hyperparameters``, YAMLs and command lines through a "renamed"
error naming the new key).
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from zoo.encoders.vision import VisionSpec
from zoo.main import main
from zoo.models import (
    FUSE,
    Aquila,
    FuseInjection,
    FuseViews,
    GeoPix,
    MaskDecoderConfig,
    MaskLossWeights,
    MemoryConfig,
    SegTokens,
    SFIConfig,
    SpeedConfig,
    TrainingStage,
)
from zoo.models.stages import freeze_groups


def test_aquila_upgrades_zoo_0_1_flat_keys():
    old = {
        "_class_path": "zoo.models.Aquila",
        "vision_encoder": "zoo_convnext_tiny",
        "vision_pretrained": True,
        "feature_stages": [0, 1],
        "sfi_dim": 32,
        "block": "paper",
        "connector": "conv",
        "mda_layers": [],
        "compile": True,
        "activation_checkpointing": False,
        "image_size": 64,
    }
    new = Aquila.upgrade_hyperparameters(old)
    assert new["vision"] == {"name": "zoo_convnext_tiny", "pretrained": True}
    assert new["sfi"] == {
        "feature_stages": [0, 1],
        "dim": 32,
        "block": "paper",
        "connector": "conv",
        "mda_layers": [],
    }
    assert new["speed"] == {"compile": True, "activation_checkpointing": False}
    assert new["image_size"] == 64 and "sfi_dim" not in new and "compile" not in new


def test_fuse_and_geopix_upgrade_zoo_0_1_flat_keys():
    fuse = FUSE.upgrade_hyperparameters(
        {"global_layer": -1, "window_sizes": [8], "injection": "xattn", "inject_layers": [2]}
    )
    assert fuse == {
        "views": {"global_layer": -1, "window_sizes": [8]},
        "inject": {"kind": "xattn", "layers": [2]},
    }
    geopix = GeoPix.upgrade_hyperparameters(
        {
            "feature_layers": [1, 3],
            "decoder_dim": 16,
            "shared_projector": True,
            "use_memory": False,
            "memory_capacity": 8,
            "seg_tokens_per_scale": 2,
            "seg_hidden": "token",
            "bce_weight": 0.5,
            "dice_weight": 2.0,
        }
    )
    assert geopix == {
        "feature_layers": [1, 3],
        "decoder": {"dim": 16, "shared_projector": True},
        "memory": {"enabled": False, "capacity": 8},
        "seg_tokens": {"per_scale": 2, "hidden": "token"},
        "loss_weights": {"bce": 0.5, "dice": 2.0},
    }
    # the groups build from the dicts a checkpoint stores
    assert MaskDecoderConfig(**geopix["decoder"]).dim == 16
    assert MemoryConfig(**geopix["memory"]).capacity == 8
    assert SegTokens(**geopix["seg_tokens"]).hidden == "token"
    assert MaskLossWeights(**geopix["loss_weights"]).dice == 2.0
    assert FuseViews(**fuse["views"]).window_sizes == [8]
    assert FuseInjection(**fuse["inject"]).kind == "xattn"


def test_new_keys_are_kept():
    hparams = {"sfi": {"grid_size": 2}, "vision": {"name": "x"}, "speed": {"compile": False}}
    assert Aquila.upgrade_hyperparameters(hparams) == hparams


def test_groups_reach_the_modules(dm):
    model = Aquila(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        sfi=SFIConfig(grid_size=2, mda_layers=[0], dim=16),
        speed=SpeedConfig(),
    )
    assert model.connector.grid_size == 2 and model.inject_layers == [0]
    assert model.connector_proj.in_features == 16  # sfi.dim, then the LLM width
    assert len(model.injection_hooks.handles) == 1
    fuse = FUSE(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        vision=VisionSpec(name="zoo_vit_tiny"),
        views=FuseViews(multi_scale=False),
        inject=FuseInjection(layers=[1], kind="token", residual_init=0.5),
    )
    assert fuse.windows is None and list(fuse.injection) == ["1"]
    assert torch.all(fuse.injection["1"].alpha == 0.5)


@pytest.mark.parametrize(
    ("stage", "trained"),
    [
        (TrainingStage(train_vision=False, train_connector=True, train_llm=False), {"connector"}),
        (TrainingStage(train_vision=True, train_connector=False, train_llm=False), {"vision"}),
        (TrainingStage(train_vision=False, train_connector=False, train_llm=True), {"llm"}),
    ],
)
def test_freezing_follows_the_declared_groups(dm, stage, trained):
    model = Aquila(tokenizer=dm.tokenizer, class_names=dm.class_names, stage=stage)
    for group, modules in model.parameter_groups_for_stage().items():
        flags = {p.requires_grad for m in modules for p in m.parameters()}
        assert flags == {group in trained}, group
    # every trainable parameter is in the optimizer's groups, once
    optimized = [p for g in model.parameter_groups() for p in g["params"]]
    assert len({id(p) for p in optimized}) == len(optimized)
    assert {id(p) for p in optimized} == {id(p) for p in model.parameters() if p.requires_grad}


def test_a_parameter_in_no_group_is_an_error():
    model = nn.ModuleDict({"vision": nn.Linear(2, 2), "extra": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="extra.weight is in no parameter group"):
        freeze_groups(model, {"vision": [model["vision"]]}, TrainingStage())
    with pytest.raises(ValueError, match="groups vision and llm"):
        freeze_groups(
            model, {"vision": [model["vision"]], "llm": [model["vision"]]}, TrainingStage()
        )
    with pytest.raises(ValueError, match=r"parameter groups \['head'\]"):
        freeze_groups(model, {"head": [model["extra"]]}, TrainingStage())


@pytest.mark.parametrize(
    ("config", "arg", "new"),
    [
        ("configs/aquila.yaml", "--model.init_args.sfi_dim=8", "sfi.dim"),
        ("configs/aquila.yaml", "--model.init_args.vision_encoder=x", "vision.name"),
        ("configs/fuse.yaml", "--model.init_args.inject_layers=[1]", "inject.layers"),
        ("configs/fuse.yaml", "--model.init_args.compile=true", "speed.compile"),
        ("configs/geopix.yaml", "--model.init_args.memory_capacity=4", "memory.capacity"),
    ],
)
def test_an_old_flat_key_names_its_group(monkeypatch, capsys, config, arg, new):
    monkeypatch.setattr(sys, "argv", ["zoo", "fit", "--config", config, arg])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"It was renamed: use model.init_args.{new}" in err.splitlines()[0], err
