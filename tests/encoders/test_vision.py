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


#: GeoPix's tower, and the data's mean/std, come from LLaVA-1.5 (``llava:``), not a timm tag.
PAPER_TOWERS = ["configs/aquila/stage1.yaml", "configs/fuse/stage1.yaml"]


@pytest.mark.parametrize("config", PAPER_TOWERS)
def test_paper_configs_normalize_as_their_towers_weights(config):
    """A pretrained tower's tag is a real timm weight tag, and the data normalizes with its
    mean/std (OpenAI CLIP's for CLIP-ConvNeXt-XXL and CLIP ViT-L/14-336, not ImageNet's)."""
    from pathlib import Path

    import yaml
    from timm.models import get_pretrained_cfg

    cfg = yaml.safe_load(Path(config).read_text())
    vision = cfg["model"]["init_args"]["vision"]
    name = vision["name"]
    assert vision["pretrained"]
    tag = get_pretrained_cfg(name)
    assert tag is not None and tag.hf_hub_id, f"{name} is not a timm weight tag"
    data = cfg["data"]["init_args"]
    assert tuple(data["mean"]) == tuple(tag.mean) and tuple(data["std"]) == tuple(tag.std)


def test_clip_convnext_xxl_stage_maps_on_meta():
    """Aquila's A-CCN: CLIP-ConvNeXt-XXL's four stage maps at 1024 px (meta: no weights)."""
    import torch

    with torch.device("meta"):
        model = create_timm_model(
            "convnext_xxlarge.clip_laion2b_soup", features_only=True, out_indices=(0, 1, 2, 3)
        )
        maps = model(torch.empty(1, 3, 1024, 1024))
    assert model.pretrained_cfg["mean"] == (0.48145466, 0.4578275, 0.40821073)
    assert [tuple(m.shape[1:]) for m in maps] == [
        (384, 256, 256),
        (768, 128, 128),
        (1536, 64, 64),
        (3072, 32, 32),
    ]
    assert 840e6 < sum(p.numel() for p in model.parameters()) < 850e6


def test_clip_vit_l14_336_tokens_on_meta():
    import torch

    with torch.device("meta"):
        model = create_timm_model("vit_large_patch14_clip_336.openai", num_classes=0)
        maps = model.forward_intermediates(
            torch.empty(1, 3, 336, 336), indices=[22], output_fmt="NCHW", intermediates_only=True
        )
    assert tuple(maps[0].shape) == (1, 1024, 24, 24)  # 576 patch tokens
    assert 300e6 < sum(p.numel() for p in model.parameters()) < 310e6


def test_quick_gelu_equals_transformers_and_the_tower_uses_it():
    """The fused quick GELU (silu(1.702 x) / 1.702, one-kernel backward) gives transformers'
    QuickGELUActivation's values and gradients, and the CLIP tower runs it in every layer with
    the same outputs and state dict."""
    import torch
    from transformers import CLIPVisionModel
    from transformers.activations import QuickGELUActivation

    from tests.encoders.test_llava import IMAGE_SIZE, clip_config
    from zoo.encoders.vision import CLIPVisionTower, QuickGELU

    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 7, 33, generator=gen) * 4).requires_grad_()
    grad = torch.randn(4, 7, 33, generator=gen)
    want = QuickGELUActivation()(x)
    (want_grad,) = torch.autograd.grad(want, x, grad)
    got = QuickGELU()(x)
    (got_grad,) = torch.autograd.grad(got, x, grad)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)

    config = clip_config()  # the LLaVA tests' tiny CLIP tower
    assert config.hidden_act == "quick_gelu"
    torch.manual_seed(0)
    reference = CLIPVisionModel(config).eval()
    clip = CLIPVisionModel(config).eval()
    clip.load_state_dict(reference.state_dict())
    tower = CLIPVisionTower(clip)
    activations = [m.activation_fn for m in tower.model.modules() if hasattr(m, "activation_fn")]
    assert len(activations) == config.num_hidden_layers and all(
        isinstance(a, QuickGELU) for a in activations
    )
    assert tower.model.state_dict().keys() == reference.state_dict().keys()
    image = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)
    want = reference(image, output_hidden_states=True).hidden_states[-1][:, 1:]
    got = tower.forward_intermediates(image, [-1], output_fmt="NLC")[0]
    torch.testing.assert_close(got, want)
