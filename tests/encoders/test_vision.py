"""Vision encoders by name: timm's own syntax, a clear error for the retired ``hf:`` prefix."""

from __future__ import annotations

import pytest

from zoo.encoders.vision import _resolve_name, create_timm_model


def test_timm_names_and_hub_ids_pass_through():
    assert _resolve_name("convnext_atto") == "convnext_atto"
    assert _resolve_name("hf-hub:timm/vit_small_patch16_224") == "hf-hub:timm/vit_small_patch16_224"


def test_local_folder_becomes_timm_local_dir(tmp_path):
    assert _resolve_name(str(tmp_path)) == f"local-dir:{tmp_path}"
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        _resolve_name(str(tmp_path / "missing"))


def test_hf_prefix_names_timms_own_syntax():
    with pytest.raises(ValueError, match=r"use timm's own 'hf-hub:org/model'"):
        create_timm_model("hf:org/model")
