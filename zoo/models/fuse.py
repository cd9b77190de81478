"""FUSE (MF-RSVLM, arXiv 2512.24022): multi-scale sliding-window features injected again into
chosen LLM layers.

* Global view: the whole image at the ViT's input size; its patch tokens (at ``global_layer``;
  the authors' scripts take the last block) go through a two-layer GELU projector into the LLM
  (LLaVA-1.5's anatomy).
* Detail views: the image on a larger canvas, cut into overlapping sliding windows at several
  sizes (stride half a window), features taken at several depths, stitched back per (scale,
  depth) with smooth blending weights and split into interleaved sub-grids of the visual token
  grid, so they keep the canvas's resolution (or pooled to the grid: ``views.detail_tokens: pool``)
  (:class:`~zoo.layers.windows.SlidingWindowFeatures`). The global view and every window of the
  batch go through the ViT in one call (under ``torch.no_grad`` when the ViT is frozen); a
  window that covers the whole canvas is the global view, so it is not encoded again.
* Recurrent injection: the detail stacks go through the same projector into the LLM width;
  before each layer in ``inject.layers`` the hidden states at the visual positions are updated
  from them (:class:`~zoo.layers.injection.RecurrentInjection`: one routing over the stacks per
  sample, a sigmoid gate, a per-layer scale), or by a per-position router
  (``inject.kind: token``) or Flamingo-style gated cross-attention (``inject.kind: xattn``). Text
  positions are never modified.
* Ablations: ``inject.layers: []`` (injection off) and ``views.multi_scale: false`` (the detail
  stacks come from the global view's depths only, no windows).

Layer numbering: ``inject.layers`` are 0-based indices of the decoder layers the injection runs
*before* (a forward pre-hook on ``layers[i]``). The authors' code (``vhm_llama.py``) reads 1-based
numbers from ``deepstack_injection_layers``, subtracts 1 (unless a 0 is listed) and injects before
``layers[i]`` for those 0-based ``i``: their default 2, 4, 6, 8 (pre-training) is ``[1, 3, 5, 7]``
here, their fine-tuning script's 4, 6, 8 is ``[3, 5, 7]`` (configs/fuse/stage{1,2}.yaml). The
paper's summary names layers 4, 8, 12, 16 instead; the configs follow the code.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from zoo.encoders.llm import LLMSpec
from zoo.encoders.vision import VisionSpec
from zoo.layers.injection import (
    GatedCrossAttentionInjection,
    RecurrentInjection,
    TokenRoutedInjection,
)
from zoo.layers.projector import mlp_projector
from zoo.layers.windows import SlidingWindowFeatures
from zoo.models.base import OptimizerConfig, as_group
from zoo.models.decoding import GenerationConfig
from zoo.models.generator import DEFAULT_SPEED, SpeedConfig, VisionLanguageGenerator
from zoo.models.location_token import LocationToken
from zoo.models.stages import TrainingStage

#: AdamW and schedule of the paper's recipe (the configs set each stage's own).
FUSE_OPTIMIZER = OptimizerConfig(
    lr=2e-5, weight_decay=0.0, betas=(0.9, 0.999), warmup_fraction=0.03
)

__all__ = ["FUSE", "FuseInjection", "FuseViews"]


@dataclass(frozen=True)
class FuseViews:
    """FUSE's global and detail views (``views:`` in a config).

    Attributes:
        global_layer: the ViT block (0-based) whose tokens form the global view (-1: the last,
            as the authors' scripts; -2, the default, is LLaVA-1.5's penultimate).
        detail_layers: ViT blocks (0-based) the detail stacks are taken from (1/3, 2/3, the end).
        window_sizes: sliding-window sizes in canvas pixels (paper: 336 and 168).
        canvas_size: the detail canvas the image is resized to (paper: 672, twice the input).
        stride_fraction: window stride as a fraction of the window (paper: 0.5).
        detail_tokens: ``interleave`` (the authors': ``f^2`` interleaved sub-grids of the shared
            token canvas per scale and depth) or ``pool`` (area-averaged to the grid).
        multi_scale: False takes the detail stacks from the global view (no windows).
    """

    global_layer: int = -2
    detail_layers: list[int] = field(default_factory=lambda: [1, 2, 3])
    window_sizes: list[int] = field(default_factory=lambda: [128, 64])
    canvas_size: int = 128
    stride_fraction: float = 0.5
    detail_tokens: Literal["interleave", "pool"] = "interleave"
    multi_scale: bool = True


@dataclass(frozen=True)
class FuseInjection:
    """FUSE's injection of the detail stacks inside the LLM (``inject:`` in a config).

    Attributes:
        layers: LLM decoder layers (0-based) preceded by an injection (the authors' code:
            1, 3, 5, 7 in pre-training, 3, 5, 7 in fine-tuning; empty: injection off).
        kind: ``recurrent`` (the authors' block), ``token`` (a router per position) or
            ``xattn`` (gated cross-attention).
        residual_init: initial residual scale of ``recurrent``/``token`` injection (the authors:
            1; 0 makes each injection the identity at initialization).
    """

    layers: list[int] = field(default_factory=lambda: [1, 2])
    kind: Literal["recurrent", "token", "xattn"] = "recurrent"
    residual_init: float = 0.0


#: The default image encoder: the zoo's offline ViT (the paper: CLIP ViT-L/14 at 336 px).
ZOO_VIT = VisionSpec(name="zoo_vit_tiny")


class FUSE(VisionLanguageGenerator):
    """FUSE / MF-RSVLM over a swappable ViT and LLM.

    Args:
        vision: the image encoder: a timm ViT (``vit_large_patch14_clip_336.openai`` in the
            paper), ``hf-hub:org/model``, a local folder or (with ``llava``) LLaVA's tower.
        views: the global view and the sliding-window detail views (:class:`FuseViews`).
        inject: where and how the detail stacks are injected (:class:`FuseInjection`).
        image_placement: ``token``: the visual tokens replace the ``<image>`` token (LLaVA's
            place, first in the human turn); ``first``: before the whole prompt, BOS and system
            line included (the authors' ``vhm_arch.py``).
        question_types: VQA question types reported separately.
        llm: the LLM (see :class:`~zoo.models.generator.VisionLanguageGenerator`).
        llava: a LLaVA-1.5 checkpoint folder: its tower, projector and LLM.
        llava_projector: LLaVA-1.5's projector alone into ``projector`` (the authors' start).
        stage: what this training stage trains, LoRA, and the checkpoint it starts from.
        generation: decoding settings for validation, test and predict.
        val_generate_batches: validation batches decoded for the generation metrics per epoch.
        speed: activation checkpointing and ``torch.compile``.
        tokenizer: the LLM's tokenizer (linked from the data).
        class_names: scene classes (linked from the data).
        image_size: input size in pixels (linked from the data).
        in_channels: the bands of an image (linked from the data's ``num_channels``).
        optimizer: AdamW and its schedule (defaults: the paper's recipe).
        location: a location token after the visual tokens (None: none; see
            :class:`~zoo.models.location_token.LocationToken`).

    Raises:
        ValueError: an unknown ``image_placement``.
    """

    def __init__(
        self,
        vision: VisionSpec = ZOO_VIT,
        views: FuseViews = FuseViews(),
        inject: FuseInjection = FuseInjection(),
        image_placement: Literal["token", "first"] = "token",
        question_types: list[str] = ["presence", "count", "position", "colour", "category"],  # noqa: B006
        llm: LLMSpec | str = "tiny",
        llava: str | None = None,
        llava_projector: str | None = None,
        stage: TrainingStage | None = None,
        generation: GenerationConfig | None = None,
        val_generate_batches: int = 2,
        speed: SpeedConfig = DEFAULT_SPEED,
        tokenizer: PreTrainedTokenizerBase | None = None,
        class_names: list[str] | None = None,
        image_size: int = 64,
        in_channels: int = 3,
        optimizer: OptimizerConfig = FUSE_OPTIMIZER,
        location: LocationToken | None = None,
    ) -> None:
        if image_placement not in ("token", "first"):
            raise ValueError(
                f"image_placement {image_placement!r}: choose token (at <image>, LLaVA's place) "
                "or first (before the whole prompt, the FUSE authors')"
            )
        self.image_first = image_placement == "first"
        self.views = as_group(FuseViews, views, "views")
        self.inject_config = as_group(FuseInjection, inject, "inject")
        self.question_types = list(question_types)
        super().__init__(
            vision=vision,
            llm=llm,
            llava=llava,
            llava_projector=llava_projector,
            stage=stage,
            generation=generation,
            val_generate_batches=val_generate_batches,
            speed=speed,
            tokenizer=tokenizer,
            class_names=class_names,
            image_size=image_size,
            in_channels=in_channels,
            optimizer=optimizer,
            location=location,
        )

    def configure_models(self) -> None:
        """The ViT, the shared projector, the sliding windows and the injection blocks.

        Raises:
            ValueError: a vision encoder without intermediate layers.
        """
        views, injection = self.views, self.inject_config
        image_size = self.image_size
        self.vision = self.create_vision(num_classes=0, img_size=image_size)
        if not hasattr(self.vision, "forward_intermediates"):
            raise ValueError(
                f"vision encoder {self.vision_spec.name!r} gives no intermediate layers"
            )
        depth = len(self.vision.blocks)
        self.global_layer = views.global_layer % depth
        llava_layer = self.llava_feature_layer
        if llava_layer is not None and self.global_layer != llava_layer % depth:
            # The FUSE authors read the last block with LLaVA-1.5's projector: allowed, but said.
            rank_zero_warn(
                f"views.global_layer {views.global_layer}: the LLaVA checkpoint's projector was "
                f"trained on tower block {llava_layer} (its vision feature layer); "
                f"global_layer: {llava_layer} gives LLaVA's anatomy"
            )
        self.detail_layers = [layer % depth for layer in views.detail_layers]
        grid = image_size // self.vision.patch_embed.patch_size[0]
        self.grid_size = grid
        width = self.llm_width
        #: The multimodal projector, shared by the global view and the detail stacks.
        self.projector = mlp_projector(self.vision.embed_dim, width)
        self.multi_scale = views.multi_scale
        self.windows = (
            SlidingWindowFeatures(
                views.window_sizes,
                views.canvas_size,
                image_size,
                grid,
                views.stride_fraction,
                detail_tokens=views.detail_tokens,
            )
            if views.multi_scale
            else None
        )
        depths = len(self.detail_layers)
        stacks = self.windows.num_stacks(depths, grid) if self.windows is not None else depths

        def block() -> nn.Module:
            if injection.kind == "recurrent":
                return RecurrentInjection(width, stacks, residual_init=injection.residual_init)
            if injection.kind == "token":
                module = TokenRoutedInjection(width, width, stacks)
                nn.init.constant_(module.alpha, injection.residual_init)
                return module
            return GatedCrossAttentionInjection(width, width, num_heads=4)

        self.injection = nn.ModuleDict({str(layer): block() for layer in injection.layers})
        self.inject_layers = sorted(injection.layers)
        self.metrics = self.generation_metrics(self.question_types)

    def parameter_groups_for_stage(self) -> dict[str, list[nn.Module]]:
        """``vision``: the ViT; ``connector``: the projector and injection; ``llm``: the LLM.

        Returns:
            The groups the training stage freezes or trains.
        """
        return {
            "vision": [self.vision],
            "connector": [self.projector, self.injection],
            "llm": [self.llm],
        }

    def llava_projector_target(self) -> nn.Module:
        """The shared multimodal projector (LLaVA-1.5's anatomy).

        Returns:
            ``self.projector``.
        """
        return self.projector

    def _encode(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """``N×D×h×w`` token maps of ``images`` at the given ViT blocks, in one pass (without
        autograd when the ViT is frozen)."""
        frozen = not any(p.requires_grad for p in self.vision.parameters())
        with torch.no_grad() if frozen else nullcontext():
            return self.vision.forward_intermediates(
                images, indices=layers, output_fmt="NCHW", intermediates_only=True
            )

    def detail_stacks(self, image: Tensor) -> Tensor:
        """The detail features: windows × depths, or the global view's depths.

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            ``B×S×N×D_vision`` stacks.
        """
        return self._features(image, with_details=True)[1]

    def _features(self, image: Tensor, with_details: bool) -> tuple[Tensor, Tensor | None]:
        """The global view's ``B×N×D_vision`` tokens and the detail stacks, one ViT call."""
        batch = image.shape[0]
        layers = sorted({self.global_layer, *(self.detail_layers if with_details else [])})
        views = image
        if with_details and self.windows is not None:
            views = torch.cat([image, self.windows.cut(image).to(image.dtype)])
        # One split per depth into (global view, windows): its backward concatenates the two
        # gradients, where two slices would each zero-fill the whole map.
        maps = {
            layer: m.split([batch, m.shape[0] - batch])
            for layer, m in zip(layers, self._encode(views, layers), strict=True)
        }
        tokens = maps[self.global_layer][0].flatten(2).transpose(1, 2)
        if not with_details:
            return tokens, None
        if self.windows is not None:  # a whole-canvas window is the global view: its maps serve
            details = self.windows.stitch(
                [maps[i][1] for i in self.detail_layers],
                batch,
                whole=[maps[i][0] for i in self.detail_layers],
            )
        else:
            details = torch.stack(
                [maps[i][0].flatten(2).transpose(1, 2) for i in self.detail_layers], dim=1
            )
        return tokens, details

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        """The projected global view, and the projected detail stacks (the injection's context).

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            The tokens ``B×N×llm_width`` and the stacks (None without injection).
        """
        tokens, details = self._features(image, with_details=bool(self.inject_layers))
        if details is None:
            return self.projector(tokens), None
        return self.projector(tokens), self.projector(details)

    def stage_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Drop a previous stage's injection blocks before layers this stage does not inject before.

        The authors' stage 1 injects before layers 1, 3, 5, 7, their stage 2 before 3, 5, 7;
        each kept block stays at its decoder layer.

        Args:
            state: the previous stage's state dict.

        Returns:
            The tensors this stage loads.
        """
        kept = {str(layer) for layer in self.inject_layers}
        left = sorted(
            {k.split(".")[1] for k in state if k.startswith("injection.")} - kept, key=int
        )
        if left:
            rank_zero_info(
                f"FUSE: the previous stage's injection blocks before layers {', '.join(left)} are "
                f"not used (inject_layers {self.inject_layers})"
            )
        return {
            k: v
            for k, v in state.items()
            if not (k.startswith("injection.") and k.split(".")[1] not in kept)
        }

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """Update the visual hidden states from the projected detail stacks.

        Args:
            layer: the decoder layer about to run.
            visual: the visual hidden states ``B×N×D``.
            context: the projected detail stacks.

        Returns:
            The new visual hidden states.
        """
        return self.injection[str(layer)](visual, context)
