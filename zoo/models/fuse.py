"""FUSE (MF-RSVLM, arXiv 2512.24022): multi-scale sliding-window features injected again into
chosen LLM layers.

* Global view: the whole image resized to the ViT's input size; its patch tokens (at
  ``global_layer``) go through a two-layer GELU projector into the LLM (LLaVA-1.5's anatomy).
* Detail views: the image on a larger canvas, cut into overlapping sliding windows at several
  sizes (stride half a window), every window of the batch encoded in one call, features taken
  at several depths, stitched back per (scale, depth) with smooth blending weights and brought
  to the visual token grid (:class:`~zoo.layers.windows.SlidingWindowFeatures`).
* Recurrent injection: before each layer in ``inject_layers`` the hidden states at the visual
  positions are updated from the detail stacks (router, sigmoid gate, per-layer scale at 0:
  :class:`~zoo.layers.injection.RecurrentInjection`), or by Flamingo-style gated
  cross-attention (``injection: xattn``). Text positions are never modified.
* Ablations: ``inject_layers: []`` (injection off) and ``multi_scale: false`` (the detail
  stacks come from the global view's depths only, no windows).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from zoo.layers.injection import GatedCrossAttentionInjection, RecurrentInjection
from zoo.layers.projector import mlp_projector
from zoo.layers.windows import SlidingWindowFeatures
from zoo.models.base import OptimizerConfig
from zoo.models.generator import VisionLanguageGenerator

#: AdamW and schedule of the paper's recipe (the configs set each stage's own).
FUSE_OPTIMIZER = OptimizerConfig(
    lr=2e-5, weight_decay=0.0, betas=(0.9, 0.999), warmup_fraction=0.03
)

__all__ = ["FUSE"]


class FUSE(VisionLanguageGenerator):
    """FUSE / MF-RSVLM over a swappable ViT and LLM.

    Args:
        vision_encoder: a timm ViT name (``vit_large_patch14_clip_336.openai`` in the paper),
            ``hf-hub:org/model`` or a local folder.
        global_layer: the ViT block whose tokens form the global view (-2: the penultimate,
            as LLaVA-1.5).
        detail_layers: ViT blocks the detail stacks are taken from (e.g. 1/3, 2/3, the end).
        window_sizes: sliding-window sizes in canvas pixels (paper: 336 and 168).
        canvas_size: the detail canvas the image is resized to.
        stride_fraction: window stride as a fraction of the window (paper: 0.5).
        multi_scale: False takes the detail stacks from the global view (no windows).
        inject_layers: LLM decoder layers preceded by an injection (paper: 4, 8, 12, 16).
        injection: ``recurrent`` (router + gate + scale) or ``xattn`` (gated cross-attention).
        question_types: VQA question types reported separately.
        optimizer: AdamW and its schedule (defaults: the paper's recipe).
        **kwargs: the vision weights, LLM, training stage, decoding and linked data arguments of
            :class:`~zoo.models.generator.VisionLanguageGenerator`.
    """

    def __init__(
        self,
        vision_encoder: str = "zoo_vit_tiny",
        global_layer: int = -2,
        detail_layers: list[int] = [1, 2, 3],  # noqa: B006
        window_sizes: list[int] = [64, 32],  # noqa: B006
        canvas_size: int = 64,
        stride_fraction: float = 0.5,
        multi_scale: bool = True,
        inject_layers: list[int] = [1, 2],  # noqa: B006
        injection: Literal["recurrent", "xattn"] = "recurrent",
        question_types: list[str] = ["presence", "count", "position", "colour", "category"],  # noqa: B006
        optimizer: OptimizerConfig = FUSE_OPTIMIZER,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self.save_hyperparameters(ignore=["tokenizer"])
        image_size = self.image_size
        self.vision = self.create_vision(
            vision_encoder, num_classes=0, img_size=image_size
        )
        if not hasattr(self.vision, "forward_intermediates"):
            raise ValueError(f"vision encoder {vision_encoder!r} gives no intermediate layers")
        depth = len(self.vision.blocks)
        self.global_layer = global_layer % depth
        llava_layer = self.llava_feature_layer
        if llava_layer is not None and self.global_layer != llava_layer % depth:
            raise ValueError(
                f"global_layer {global_layer}: the LLaVA checkpoint's projector was trained on "
                f"tower block {llava_layer} (its vision feature layer); set global_layer: {llava_layer}"
            )
        self.detail_layers = [layer % depth for layer in detail_layers]
        grid = image_size // self.vision.patch_embed.patch_size[0]
        self.grid_size = grid
        width, vision_width = self.llm_width, self.vision.embed_dim
        self.projector = mlp_projector(vision_width, width)
        self.multi_scale = multi_scale
        self.windows = SlidingWindowFeatures(
            window_sizes, canvas_size, image_size, grid, stride_fraction
        ) if multi_scale else None
        stacks = len(self.detail_layers) * (len(window_sizes) if multi_scale else 1)
        self.injection = nn.ModuleDict({
            str(layer): (
                RecurrentInjection(width, vision_width, stacks) if injection == "recurrent"
                else GatedCrossAttentionInjection(width, vision_width, num_heads=4)
            )
            for layer in inject_layers
        })
        self.inject_layers = sorted(inject_layers)
        self.metrics = self.generation_metrics(question_types)
        self.setup_stage()

    def _encode(self, images: Tensor, layers: list[int]) -> list[Tensor]:
        """``B×D×h×w`` token maps of ``images`` at the given ViT blocks, in one pass."""
        return self.vision.forward_intermediates(
            images, indices=layers, output_fmt="NCHW", intermediates_only=True
        )

    def detail_stacks(self, image: Tensor, global_maps: list[Tensor] | None = None) -> Tensor:
        """``B×S×N×D`` detail features: windows × depths, or the global view's depths."""
        if self.windows is not None:
            return self.windows(image, lambda x: self._encode(x, self.detail_layers))
        maps = global_maps if global_maps is not None else self._encode(image, self.detail_layers)
        return torch.stack([m.flatten(2).transpose(1, 2) for m in maps], dim=1)

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        layers = sorted({self.global_layer, *self.detail_layers})
        maps = dict(zip(layers, self._encode(image, layers), strict=True))
        tokens = self.projector(maps[self.global_layer].flatten(2).transpose(1, 2))
        if not self.inject_layers:
            return tokens, None
        details = self.detail_stacks(image, [maps[layer] for layer in self.detail_layers])
        return tokens, details

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """Update the visual hidden states from the detail stacks."""
        return self.injection[str(layer)](visual, context)
