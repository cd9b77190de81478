"""Aquila: a remote-sensing vision-language generator over multi-scale CLIP-ConvNeXt features.

* A-CCN: a ConvNeXt (CLIP-ConvNeXt-XXL at 1024 px in the paper) without its head gives four
  stage maps; four two-layer MLP projectors map each stage's channels to the LLM width.
* SFI: a learnable L×L query grid; each query cross-attends only to the sub-region of each
  scale that lies under it; the L² outputs are the LLM's visual tokens.
* MDA: SFI again inside the LLM, before the configured decoder layers, with the hidden states
  at the visual positions as queries, written back in place (an empty list switches it off).
* Ablations of the paper's Table 5: ``connector: conv`` (convolutional concatenation instead
  of SFI) and ``mda_layers: []``.
Training is two stages (configs/aquila/stage1.yaml, stage2.yaml): SFI only, then SFI + LoRA.
"""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from zoo.layers.projector import MapProjector
from zoo.layers.sfi import ConvConcatBaseline, SpatialFeatureIntegration
from zoo.models.base import OptimizerConfig
from zoo.models.generator import VisionLanguageGenerator

#: AdamW and schedule of the paper's recipe (the configs set each stage's own).
AQUILA_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.06
)

__all__ = ["Aquila"]


class Aquila(VisionLanguageGenerator):
    """Aquila with SFI and MDA over a swappable ConvNeXt and LLM.

    Args:
        vision_encoder: a timm ConvNeXt name (``convnext_xxlarge.clip_laion2b_soup`` in the
            paper), ``hf-hub:org/model`` or a local folder; any timm model with ``features_only``.
        feature_stages: which backbone stages feed SFI (each map must be a multiple of the grid).
        grid_size: L; the LLM sees L² visual tokens (32 -> 1024 tokens in the paper).
        num_heads: attention heads of SFI and MDA.
        connector: ``sfi`` or ``conv`` (the Table 5 convolutional-concatenation baseline).
        mda_layers: LLM decoder layers preceded by an MDA block (empty: MDA off).
        question_types: VQA question types reported separately.
        optimizer: AdamW and its schedule (defaults: the paper's recipe).
        **kwargs: the vision weights, LLM, training stage, decoding and linked data arguments of
            :class:`~zoo.models.generator.VisionLanguageGenerator`.
    """

    def __init__(
        self,
        vision_encoder: str = "zoo_convnext_tiny",
        feature_stages: list[int] = [0, 1, 2],  # noqa: B006
        grid_size: int = 4,
        num_heads: int = 4,
        connector: Literal["sfi", "conv"] = "sfi",
        mda_layers: list[int] = [1, 3],  # noqa: B006
        question_types: list[str] = ["presence", "count", "position", "colour", "category"],  # noqa: B006
        optimizer: OptimizerConfig = AQUILA_OPTIMIZER,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self.save_hyperparameters(ignore=["tokenizer"])
        self.vision = self.create_vision(
            vision_encoder, features_only=True,
            out_indices=tuple(feature_stages),
        )
        channels = self.vision.feature_info.channels()
        width = self.llm_width
        self.projectors = nn.ModuleList(MapProjector(c, width) for c in channels)
        dims = [width] * len(channels)
        if connector == "sfi":
            self.connector = SpatialFeatureIntegration(width, grid_size, dims, num_heads)
        else:
            self.connector = ConvConcatBaseline(width, grid_size, dims)
        self.mda = nn.ModuleDict({
            str(layer): SpatialFeatureIntegration(
                width, grid_size, dims, num_heads, learnable_queries=False
            )
            for layer in mda_layers
        })
        self.inject_layers = sorted(mda_layers)
        self.metrics = self.generation_metrics(question_types)
        self.setup_stage()

    def multiscale_features(self, image: Tensor) -> list[Tensor]:
        """The projected stage maps ``B×width×H_s×W_s`` (A-CCN)."""
        return [p(f) for p, f in zip(self.projectors, self.vision(image), strict=True)]

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        features = self.multiscale_features(image)
        return self.connector(features), features

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """MDA: SFI with the visual hidden states as queries (written back in place)."""
        return self.mda[str(layer)](context, visual.to(context[0].dtype))
