"""Vision encoders picked by name: timm models, timm's ``hf-hub:`` Hub ids, local folders.

A local folder holding a transformers CLIP vision model (``config.json`` of model type
``clip_vision_model`` or ``clip``, as LLaVA's ``mm_vision_tower``) becomes a
:class:`CLIPVisionTower`: transformers' own CLIP behind the timm methods the generator families
call (``forward_intermediates``, ``blocks``, ``embed_dim``, ``patch_embed.patch_size``).

Every encoder is wrapped in :class:`VisionEncoder`, which returns a grid of patch tokens and
a pooled vector, and accepts an optional token mask for masked image modelling. Vision
transformers are masked at the token level (a learnable mask token replaces the patch
embedding, as BEiT and FLAVA do); any other backbone (ConvNeXt, ResNet ...) is masked in pixel
space under each output cell, as SimMIM does, so the masked-modelling losses work for every
encoder a user can name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import (
    adapt_input_conv,
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
)
from timm.models.convnext import ConvNeXt
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer
from torch import Tensor, nn

from zoo.encoders.sources import (
    build_hf_model,
    building_architecture_only,
    hf_source,
    mark_source,
    stored_source,
)
from zoo.groups import as_group

__all__ = [
    "CLIPVisionTower",
    "QuickGELU",
    "VisionEncoder",
    "VisionOutput",
    "VisionSpec",
    "adapt_clip_channels",
    "adapt_patch_embedding",
    "create_timm_model",
    "create_vision_model",
    "is_clip_folder",
    "use_fused_quick_gelu",
]


# timm reads this module-level table when the models below are registered; ``first_conv``
# lets timm adapt a weight file's RGB stem to ``in_chans`` bands (adapt_input_conv).
default_cfgs = generate_default_cfgs(
    {
        "zoo_vit_tiny.untrained": {
            "input_size": (3, 64, 64),
            "num_classes": 0,
            "license": "mit",
            "first_conv": "patch_embed.proj",
        },
        "zoo_convnext_tiny.untrained": {
            "input_size": (3, 64, 64),
            "num_classes": 0,
            "license": "mit",
            "first_conv": "stem.0",
        },
    }
)


@register_model
def zoo_vit_tiny(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A 4-layer, 128-wide ViT with 8-pixel patches at 64 px: the zoo's CPU-friendly default.

    Args:
        pretrained: load weights (this model has none published; timm's registry argument).
        **kwargs: timm's model arguments, over the defaults.

    Returns:
        The ViT.
    """
    args = dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0)
    return _create_vision_transformer("zoo_vit_tiny", pretrained=pretrained, **(args | kwargs))


@register_model
def zoo_convnext_tiny(pretrained: bool = False, **kwargs) -> ConvNeXt:
    """A 4-stage ConvNeXt (one block a stage, 32..128 channels): at 64 px its stages are 16, 8,
    4 and 2 cells wide; the zoo's CPU-friendly multi-scale default.

    Args:
        pretrained: load weights (this model has none published; timm's registry argument).
        **kwargs: timm's model arguments, over the defaults.

    Returns:
        The ConvNeXt.
    """
    args = dict(depths=(1, 1, 1, 1), dims=(32, 64, 96, 128))
    return build_model_with_cfg(
        ConvNeXt,
        "zoo_convnext_tiny",
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        **(args | kwargs),
    )


#: timm's schemes whose architecture is in the source's ``config.json``, not in timm's code.
_TIMM_SOURCES = ("hf-hub:", "hf_hub:", "local-dir:")


def _has_source_config(name: str) -> bool:
    """Whether the architecture of ``name`` is read from its source (a timm ``hf-hub:`` or
    ``local-dir:`` name, a timm or CLIP folder): such a model stores it in its checkpoint."""
    return name.startswith(_TIMM_SOURCES) or os.sep in name or name.startswith(".")


def _timm_source(model: nn.Module) -> dict[str, Any]:
    """What rebuilds a timm model of an ``hf-hub:`` / ``local-dir:`` name without its files:
    the architecture, the source's ``pretrained_cfg`` and model arguments (what timm read from
    its ``config.json``)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return {
        "timm": {
            "architecture": cfg.get("architecture"),
            "pretrained_cfg": cfg,
            "model_args": dict(getattr(model, "pretrained_model_args", None) or {}),
        }
    }


def _read_timm(name: str) -> dict[str, Any]:
    """:func:`_timm_source` read from the source's ``config.json`` alone (no weights): for a
    checkpoint that did not store it."""
    from timm.models._hub import load_model_config_from_hf, load_model_config_from_path

    timm_name = _resolve_name(name)
    scheme, _, model_id = timm_name.partition(":")
    if scheme == "local-dir":
        cfg, architecture, args = load_model_config_from_path(model_id)
    else:
        cfg, architecture, args = load_model_config_from_hf(model_id)
    return {
        "timm": {
            "architecture": architecture,
            "pretrained_cfg": dict(cfg),
            "model_args": dict(args or {}),
        }
    }


def _timm_architecture(name: str, **kwargs: Any) -> nn.Module:
    """The timm model of ``name`` with random weights, from the checkpoint's stored source
    where timm would read one (inside :func:`~zoo.encoders.sources.architecture_only`)."""
    if not _has_source_config(name):  # timm's own name: the architecture is in timm's code
        return timm.create_model(name, pretrained=False, **kwargs)
    stored = stored_source(name, read=lambda: _read_timm(name))["timm"]
    args = dict(stored["model_args"])
    if args:  # as timm's factory passes them: the source's arguments under the caller's
        kwargs = {"pretrained_model_args": args, **args, **kwargs}
    model = timm.create_model(
        stored["architecture"], pretrained=False, pretrained_cfg=stored["pretrained_cfg"], **kwargs
    )
    return mark_source(model, name, {"timm": stored})


def _resolve_name(name: str) -> str:
    """Map a local folder to timm's ``local-dir:``; timm names and ``hf-hub:`` pass through."""
    if name.startswith("hf:"):
        raise ValueError(
            f"vision encoder {name!r}: the zoo has no 'hf:' prefix; use timm's own "
            f"'hf-hub:{name[3:]}' (text encoders and LLMs take the plain Hugging Face id)"
        )
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):  # timm's own schemes
        return name
    if os.sep in name or name.startswith("."):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"vision encoder {name!r} looks like a path but {path} is not a folder; give a timm "
                "model name (e.g. 'vit_small_patch16_224'), 'hf-hub:org/model', or a folder holding a "
                "timm config.json and weights"
            )
        return f"local-dir:{path}"
    return name


def create_timm_model(
    name: str, pretrained: bool = False, checkpoint_path: str | None = None, **kwargs: Any
) -> nn.Module:
    """Create a timm model with a message that says what to do when weights are unavailable.

    Args:
        name: a timm name, ``hf-hub:org/model`` or a local timm folder.
        pretrained: load the named weights.
        checkpoint_path: a local weight file (implies ``pretrained``).
        **kwargs: timm's model arguments.

    Returns:
        The model.

    Raises:
        FileNotFoundError: ``checkpoint_path`` or a folder name does not exist.
        ValueError: timm does not know the name.
        RuntimeError: the weights could not be loaded (e.g. offline).
    """
    if building_architecture_only():  # the checkpoint holds every weight: none read here
        return _timm_architecture(name, **kwargs)
    timm_name = _resolve_name(name)
    overlay = {}
    if checkpoint_path is not None:
        if not Path(checkpoint_path).is_file():
            raise FileNotFoundError(
                f"vision encoder checkpoint_path {checkpoint_path} does not exist"
            )
        overlay = {"pretrained_cfg_overlay": {"file": str(checkpoint_path)}}
        pretrained = True
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, **overlay, **kwargs)
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise ValueError(
                f"unknown vision encoder {name!r}; list the names with timm.list_models('*vit*')"
            ) from error
        raise
    except OSError as error:  # hub unreachable, missing file
        raise RuntimeError(
            f"could not load pretrained weights for vision encoder {name!r} ({error}). This machine "
            "may be offline: set pretrained: false, or point checkpoint_path at a local weight file"
        ) from error
    # A timm name's architecture is timm's code (loading builds it with pretrained=False);
    # an hf-hub: / local-dir: one's is in its config.json, kept in the checkpoint.
    return mark_source(model, name, _timm_source(model)) if _has_source_config(name) else model


def adapt_patch_embedding(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A pretrained RGB stem (patch embedding, first conv) for ``in_channels`` input bands.

    timm's rule for ``in_chans`` (:func:`timm.models.adapt_input_conv`), so the zoo's CLIP,
    FLAVA and LLaVA towers adapt exactly as timm adapts its own models: one band gets the sum of
    the RGB kernels; N bands get the RGB kernels repeated cyclically (R, G, B, R, ...) and scaled
    by ``3 / N``, so an image whose bands all equal one grey value gives the RGB model's response.

    Args:
        conv: the pretrained stem (its weights are not changed).
        in_channels: the bands the model reads.

    Returns:
        ``conv`` itself when it already reads ``in_channels``, else a new conv with the adapted
        weights (and the same bias, stride, padding, dtype and device).
    """
    if conv.in_channels == in_channels:
        return conv
    adapted = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        adapted.weight.copy_(adapt_input_conv(in_channels, conv.weight.detach()))
        if conv.bias is not None:
            adapted.bias.copy_(conv.bias)
    return adapted


def adapt_clip_channels(clip: nn.Module, in_channels: int) -> nn.Module:
    """A transformers CLIP vision model (or its FLAVA cousin's image model) for ``in_channels``
    bands: its patch embedding adapted by :func:`adapt_patch_embedding` and its config's
    ``num_channels`` set, so the stored architecture rebuilds with the same shape.

    Args:
        clip: a ``CLIPVisionModel`` (``embeddings.patch_embedding``) or a FLAVA image model
            (``embeddings.patch_embeddings.projection``).
        in_channels: the bands the model reads.

    Returns:
        ``clip``, changed in place.
    """
    embeddings = clip.vision_model.embeddings if hasattr(clip, "vision_model") else clip.embeddings
    if hasattr(embeddings, "patch_embedding"):
        embeddings.patch_embedding = adapt_patch_embedding(embeddings.patch_embedding, in_channels)
    else:
        patches = embeddings.patch_embeddings
        patches.projection = adapt_patch_embedding(patches.projection, in_channels)
    clip.config.num_channels = in_channels
    return clip


def is_clip_folder(name: str) -> bool:
    """Whether ``name`` is a local folder holding a transformers CLIP (vision) model.

    Args:
        name: a model name or folder.

    Returns:
        True for a folder whose ``config.json`` says ``clip_vision_model`` or ``clip``.
    """
    config = Path(name).expanduser() / "config.json"
    if not config.is_file():
        return False
    return json.loads(config.read_text(encoding="utf-8")).get("model_type") in (
        "clip_vision_model",
        "clip",
    )


def create_vision_model(
    name: str, pretrained: bool = False, checkpoint_path: str | None = None, **kwargs: Any
) -> nn.Module:
    """A transformers CLIP folder as a :class:`CLIPVisionTower`, any other name through timm.

    ``kwargs`` are timm's; a CLIP tower keeps its own size (``img_size`` is read at call time,
    position embeddings are interpolated), refuses ``features_only`` (it has one scale) and
    takes ``in_chans`` as timm does (its patch embedding adapted, :func:`adapt_clip_channels`).

    Args:
        name: a timm name, ``hf-hub:org/model``, a timm folder or a CLIP folder.
        pretrained: load the named weights (a CLIP folder's own).
        checkpoint_path: a local weight file (timm models only).
        **kwargs: timm's model arguments.

    Returns:
        The model.

    Raises:
        ValueError: ``features_only`` or ``checkpoint_path`` asked of a CLIP folder.
    """
    if building_architecture_only():  # the checkpoint holds every weight: no file is read
        stored = (
            stored_source(name, read=lambda: _read_vision(name))
            if _has_source_config(name)
            else None
        )
        if stored is None or "clip" not in stored:
            return create_timm_model(name, pretrained, checkpoint_path, **kwargs)
        _check_clip_arguments(name, kwargs, None)
        from transformers import CLIPVisionModel

        clip = build_hf_model(CLIPVisionModel, stored["clip"])
        tower = CLIPVisionTower(adapt_clip_channels(clip, kwargs.get("in_chans", 3)))
        return mark_source(tower, name, stored)
    if not is_clip_folder(name):
        return create_timm_model(name, pretrained, checkpoint_path, **kwargs)
    _check_clip_arguments(name, kwargs, checkpoint_path)
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if pretrained:
        clip = CLIPVisionModel.from_pretrained(name, attn_implementation="sdpa")
    else:
        config = CLIPVisionConfig.from_pretrained(name)
        config._attn_implementation = "sdpa"
        clip = CLIPVisionModel(config)
    clip = adapt_clip_channels(clip, kwargs.get("in_chans", 3))
    return mark_source(CLIPVisionTower(clip), name, {"clip": hf_source(clip)})


def _check_clip_arguments(name: str, kwargs: dict[str, Any], checkpoint_path: str | None) -> None:
    """Refuse what a CLIP folder cannot give: stage maps, another weight file."""
    if kwargs.get("features_only"):
        raise ValueError(
            f"vision encoder {name!r} is a CLIP ViT (one scale): it cannot give the stage maps "
            "that features_only asks for; use a timm ConvNeXt for this family"
        )
    if checkpoint_path is not None:
        raise ValueError(
            f"vision encoder {name!r}: a CLIP folder holds its weights; drop checkpoint_path"
        )


def _read_vision(name: str) -> dict[str, Any]:
    """What :func:`create_vision_model` marks, read from the source's configuration alone (no
    weights): for a checkpoint that did not store it."""
    if not is_clip_folder(name):
        return _read_timm(name)
    from transformers import CLIPVisionConfig

    config = CLIPVisionConfig.from_pretrained(name)
    return {"clip": {"config": config.to_dict(), "attn_implementation": "sdpa"}}


@dataclass
class VisionSpec:
    """Which image encoder a family builds, and where its weights come from.

    Every family takes one (``vision:`` in a config), so an encoder is swapped the same way in
    all of them: ``--model.init_args.vision.name=vit_small_patch16_224``.

    Args:
        name: a timm model name (``zoo_vit_tiny``, ``zoo_convnext_tiny``: the zoo's offline
            ones), or a local transformers CLIP folder.
        pretrained: load the named model's published weights (timm's hub; a CLIP folder's own).
        checkpoint: a weights file (timm ``checkpoint_path``) loaded into the encoder.
    """

    name: str = "zoo_vit_tiny"
    pretrained: bool = False
    checkpoint: str | None = None

    @classmethod
    def of(cls, value: VisionSpec | str | dict[str, Any] | None) -> VisionSpec:
        """A spec from a spec, a model name, or a dict (a checkpoint's hyper-parameters).

        Args:
            value: the spec, its ``name`` alone, its fields as a dict, or None (the defaults).

        Returns:
            The spec.

        Raises:
            ValueError: a dict with a key that is not a field.
        """
        if isinstance(value, VisionSpec):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(name=value)
        return as_group(cls, value, "vision")

    @staticmethod
    def upgrade(hparams: dict[str, Any]) -> dict[str, Any]:
        """Hyper-parameters saved with flat ``vision_encoder``, ``vision_pretrained`` and
        ``vision_checkpoint`` keys (zoo 0.1) with those keys in one ``vision`` group.

        Args:
            hparams: a checkpoint's hyper-parameters.

        Returns:
            A copy with the flat keys moved into ``vision`` (unchanged when there are none).
        """
        old = {"vision_encoder": "name", "vision_pretrained": "pretrained",
               "vision_checkpoint": "checkpoint"}  # fmt: skip
        if not any(key in hparams for key in old):
            return dict(hparams)
        out = {k: v for k, v in hparams.items() if k not in old}
        group = dict(out.get("vision") or {})
        out["vision"] = group | {new: hparams[key] for key, new in old.items() if key in hparams}
        return out


#: CLIP's quick GELU constant: ``quick_gelu(x) = x · sigmoid(1.702 x)``.
QUICK_GELU_SCALE = 1.702


class _QuickGELUFunction(torch.autograd.Function):
    """``x · sigmoid(a x) = silu(a x) / a`` with a one-kernel backward: ``d/dx = silu'(a x)``.

    Hand-written because PyTorch has no quick-GELU kernel: transformers' module runs three
    element-wise passes forward and five backward; here two forward and one backward
    (``aten.silu_backward``), some three times faster on CPU.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        scaled = x * QUICK_GELU_SCALE
        ctx.save_for_backward(scaled)
        return nn.functional.silu(scaled).mul_(1 / QUICK_GELU_SCALE)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (scaled,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(grad, scaled)


class QuickGELU(nn.Module):
    """CLIP's activation ``x · sigmoid(1.702 x)``, computed as ``silu(1.702 x) / 1.702`` (the
    same function; equal to transformers' ``QuickGELUActivation`` to float rounding) with a
    one-kernel backward. :class:`CLIPVisionTower` puts it in place of transformers' module."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply the activation.

        Args:
            x: any tensor.

        Returns:
            ``x · sigmoid(1.702 x)``, the shape of ``x``.
        """
        return _QuickGELUFunction.apply(x)


def use_fused_quick_gelu(model: nn.Module) -> int:
    """Replace every transformers ``QuickGELUActivation`` inside ``model`` by :class:`QuickGELU`
    (no parameters: the state dict is unchanged).

    Args:
        model: a module, e.g. transformers' ``CLIPVisionModel``.

    Returns:
        How many activations were replaced.
    """
    from transformers.activations import QuickGELUActivation

    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, QuickGELUActivation):
                setattr(module, name, QuickGELU())
                replaced += 1
    return replaced


@dataclass(frozen=True)
class PatchGeometry:
    """What the families read from timm's ``patch_embed``: the patch size in pixels."""

    patch_size: tuple[int, int]


class CLIPVisionTower(nn.Module):
    """transformers' ``CLIPVisionModel`` with the timm ViT methods the generators use.

    Its quick-GELU activations become :class:`QuickGELU` (the same function, a faster
    backward; no weights change).

    Block ``i``'s output is transformers' ``hidden_states[i + 1]`` (index 0 is the embedding
    after ``pre_layrnorm``), so LLaVA's ``vision_feature_layer: -2`` is block ``depth - 2``;
    grids drop the CLS token (LLaVA's ``default`` / ``patch`` feature selection). Blocks after
    the deepest requested one are not run.

    Args:
        model: the CLIP vision model (its weights stay under ``model.``).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        use_fused_quick_gelu(model)
        config = model.config
        self.embed_dim: int = config.hidden_size
        self.image_size: int = config.image_size
        self.patch_embed = PatchGeometry((config.patch_size, config.patch_size))

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer layers (timm's ``blocks``)."""
        return self.model.encoder.layers

    def _tokens(self, image: Tensor, depth: int) -> list[Tensor]:
        """``B×(1+N)×D`` outputs of the first ``depth`` blocks."""
        size = tuple(image.shape[-2:])
        interpolate = size != (self.image_size, self.image_size)
        x = self.model.embeddings(image, interpolate_pos_encoding=interpolate)
        x = self.model.pre_layrnorm(x)
        out = []
        for block in self.blocks[:depth]:
            x = block(x, None)
            out.append(x)
        return out

    def forward_intermediates(
        self,
        image: Tensor,
        indices: list[int],
        output_fmt: str = "NCHW",
        intermediates_only: bool = True,
    ) -> list[Tensor]:
        """Patch-token maps of the given blocks (CLS dropped).

        Args:
            image: ``B×C×H×W`` normalized pixels.
            indices: block indices (negative ones count from the end).
            output_fmt: ``NCHW`` (``B×D×h×w`` maps) or ``NLC`` (``B×N×D`` tokens).
            intermediates_only: must be True (the only form given).

        Returns:
            One map per index.

        Raises:
            ValueError: ``intermediates_only`` is False.
        """
        if not intermediates_only:
            raise ValueError("CLIPVisionTower gives intermediates only")
        depth = len(self.blocks)
        indices = [i % depth for i in indices]
        outputs = self._tokens(image, max(indices) + 1)
        h, w = (s // p for s, p in zip(image.shape[-2:], self.patch_embed.patch_size, strict=True))
        maps = []
        for i in indices:
            tokens = outputs[i][:, 1:]
            maps.append(
                tokens.transpose(1, 2).reshape(len(image), -1, h, w)
                if output_fmt == "NCHW"
                else tokens
            )
        return maps

    def forward_features(self, image: Tensor) -> Tensor:
        """The last block's tokens.

        Args:
            image: ``B×C×H×W`` normalized pixels.

        Returns:
            ``B×(1+N)×D`` tokens, CLS first.
        """
        return self._tokens(image, len(self.blocks))[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = True) -> Tensor:
        """The pooled CLS vector after ``post_layernorm`` (CLIP's ``pooler_output``).

        Args:
            x: ``B×(1+N)×D`` tokens (:meth:`forward_features`).
            pre_logits: timm's argument (there is no classifier: always the pooled vector).

        Returns:
            ``B×D``.
        """
        return self.model.post_layernorm(x[:, 0])

    def forward(self, image: Tensor) -> Tensor:
        """The pooled CLS vector of ``image``.

        Args:
            image: ``B×C×H×W`` normalized pixels.

        Returns:
            ``B×D``.
        """
        return self.forward_head(self.forward_features(image))


@dataclass
class VisionOutput:
    """What a vision encoder returns.

    Attributes:
        tokens: patch tokens ``B×N×D`` in row-major grid order.
        pooled: the pooled vector ``B×D``.
    """

    tokens: Tensor
    pooled: Tensor


class VisionEncoder(nn.Module):
    """A named image encoder returning patch tokens, with optional masked-token input.

    Args:
        name: timm model name, ``hf-hub:org/model`` or a local timm folder.
        image_size: input size in pixels (square); transformer position embeddings follow it.
        pretrained: load the named weights (needs the hub or a cache, unless checkpoint_path).
        checkpoint_path: a local weight file for the named architecture.
        in_chans: number of input bands.
    """

    def __init__(
        self,
        name: str = "zoo_vit_tiny",
        image_size: int = 64,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
        try:  # transformers take the input size; convolutional backbones refuse the argument
            self.model = create_timm_model(
                name, pretrained, checkpoint_path, img_size=image_size, **kwargs
            )
        except TypeError:
            self.model = create_timm_model(name, pretrained, checkpoint_path, **kwargs)
        self.is_transformer = isinstance(self.model, VisionTransformer)
        self.image_size = image_size
        with torch.no_grad():
            grid = self._grid(torch.zeros(1, in_chans, image_size, image_size))
        self.grid_size: tuple[int, int] = (grid.shape[-2], grid.shape[-1])
        self.width: int = grid.shape[1]
        self.patch_size: tuple[int, int] = (
            image_size // self.grid_size[0],
            image_size // self.grid_size[1],
        )
        # Token-level mask embedding for transformers, pixel-level mask value otherwise.
        shape = (1, 1, self.width) if self.is_transformer else (1, in_chans, 1, 1)
        self.mask_token = nn.Parameter(torch.zeros(shape))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @property
    def num_patches(self) -> int:
        """Patches of one image: rows × columns of the grid."""
        return self.grid_size[0] * self.grid_size[1]

    def _grid(self, image: Tensor) -> Tensor:
        """Final feature map ``B×C×h×w`` of a convolutional backbone (shape probe only)."""
        if isinstance(self.model, VisionTransformer):
            n = self.model.patch_embed.grid_size
            return torch.zeros(1, self.model.embed_dim, *n)
        return self.model.forward_features(image)

    def forward(self, image: Tensor, token_mask: Tensor | None = None) -> VisionOutput:
        """Encode an image batch, masked patches replaced where ``token_mask`` says.

        Args:
            image: ``B×C×H×W`` normalized pixels.
            token_mask: ``B×N`` bool, the masked patches, or None.

        Returns:
            Patch tokens ``B×N×D`` (row-major) and the pooled ``B×D`` vector.
        """
        if self.is_transformer:
            return self._forward_vit(image, token_mask)
        if token_mask is not None:
            cells = token_mask.view(-1, 1, *self.grid_size).to(image.dtype)
            cells = nn.functional.interpolate(cells, size=image.shape[-2:], mode="nearest")
            image = image * (1 - cells) + self.mask_token * cells
        features = self.model.forward_features(image)
        tokens = features.flatten(2).transpose(1, 2)
        return VisionOutput(tokens=tokens, pooled=tokens.mean(dim=1))

    def _forward_vit(self, image: Tensor, token_mask: Tensor | None) -> VisionOutput:
        vit = self.model
        x = vit.patch_embed(image)
        if token_mask is not None:
            x = torch.where(token_mask.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = vit._pos_embed(x)
        x = vit.patch_drop(x)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        prefix = vit.num_prefix_tokens
        tokens = x[:, prefix:]
        pooled = x[:, 0] if prefix > 0 else tokens.mean(dim=1)
        return VisionOutput(tokens=tokens, pooled=pooled)
