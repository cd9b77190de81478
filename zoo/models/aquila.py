"""Aquila: a remote-sensing vision-language generator over multi-scale CLIP-ConvNeXt features.

* A-CCN: a ConvNeXt (CLIP-ConvNeXt-XXL at 1024 px in the paper) without its head gives four
  stage maps; four two-layer MLP projectors map each stage's channels to the SFI width
  ``sfi_dim`` (C = 1024 in the paper).
* SFI: a learnable L×L query grid; each query cross-attends only to the sub-region of each
  scale that lies under it, the keys carrying their absolute position inside the window; the
  L² outputs, projected to the LLM width, are the LLM's visual tokens.
* MDA: SFI again inside the LLM, before the configured decoder layers, with the hidden states
  at the visual positions as queries (projected to ``sfi_dim`` and the update projected back),
  written back in place (an empty list switches it off).
* Ablations of the paper's Table 5: ``connector: conv`` (the "Concat" baseline: a
  convolutional module merging the scales instead of SFI) and ``mda_layers: []``.
Training is two stages (configs/aquila/stage1.yaml, stage2.yaml): SFI only, then SFI + LoRA.
"""

from __future__ import annotations

from collections.abc import Sequence
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

__all__ = ["Aquila", "MultiLayerAlignment", "window_sizes"]


def window_sizes(reductions: Sequence[int], image_size: int, grid_size: int) -> list[int]:
    """Each stage's SFI window side ``k_s = (image_size / reduction_s) / grid_size``.

    Raises:
        ValueError: a stage map whose side is not a whole multiple of ``grid_size``; the
            message names the stage and the sizes to choose.
    """
    sizes = []
    for stage, reduction in enumerate(reductions):
        side = image_size // reduction
        if image_size % reduction or side < grid_size or side % grid_size:
            raise ValueError(
                f"Aquila: feature stage {stage} (stride {reduction}) gives a {image_size}/"
                f"{reduction} = {image_size / reduction:g} cell map at image_size={image_size}, "
                f"which is not a whole multiple of grid_size={grid_size}; choose an image size "
                f"that is a multiple of {reduction * grid_size}, other feature_stages or a "
                f"smaller grid_size"
            )
        sizes.append(side // grid_size)
    return sizes


class MultiLayerAlignment(nn.Module):
    """One MDA block: SFI at ``sfi.dim`` with the LLM's visual hidden states as queries.

    The hidden states ``h`` (``B×L²×width``) are projected to the SFI width, ``q = W_in h``,
    and the SFI's update is projected back and added, ``h + W_out(SFI(features, q) - q)``, so
    the LLM keeps its full-width hidden state. At ``sfi.dim == width`` there are no
    projections and the block returns ``SFI(features, h)``.
    """

    def __init__(self, width: int, sfi: SpatialFeatureIntegration) -> None:
        super().__init__()
        self.sfi = sfi
        projected = sfi.dim != width
        self.in_proj = nn.Linear(width, sfi.dim) if projected else None
        self.out_proj = nn.Linear(sfi.dim, width) if projected else None

    def forward(self, features: Sequence[Tensor], hidden: Tensor) -> Tensor:
        if self.in_proj is None or self.out_proj is None:
            return self.sfi(features, hidden)
        queries = self.in_proj(hidden)
        return hidden + self.out_proj(self.sfi(features, queries) - queries)


class Aquila(VisionLanguageGenerator):
    """Aquila with SFI and MDA over a swappable ConvNeXt and LLM.

    Args:
        vision_encoder: a timm ConvNeXt name (``convnext_xxlarge.clip_laion2b_soup`` in the
            paper), ``hf-hub:org/model`` or a local folder; any timm model with ``features_only``.
        feature_stages: which backbone stages feed SFI (each map must be a multiple of the grid).
        grid_size: L; the LLM sees L² visual tokens (32 -> 1024 tokens in the paper).
        num_heads: attention heads of SFI and MDA (1 for ``block: paper``).
        sfi_dim: width C of the projectors, SFI and MDA (paper: 1024; None: the LLM width).
        block: ``rich`` (multi-head, norms, MLP, scale embeddings) or ``paper`` (§3.3's
            equations; see :class:`~zoo.layers.sfi.SpatialFeatureIntegration`).
        key_positions: add learnable absolute positions inside each window to the keys of SFI
            and MDA (the paper's positional encodings in the cross-attention).
        connector: ``sfi`` or ``conv`` (Table 5's "Concat" baseline: per-scale strided
            depthwise convolutions, concatenated and merged by a 1x1 projection).
        mda_layers: LLM decoder layers (0-based) preceded by an MDA block (empty: MDA off).
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
        sfi_dim: int | None = None,
        block: Literal["rich", "paper"] = "rich",
        key_positions: bool = True,
        connector: Literal["sfi", "conv"] = "sfi",
        mda_layers: list[int] = [1, 3],  # noqa: B006
        question_types: list[str] = ["presence", "count", "position", "colour", "category"],  # noqa: B006
        optimizer: OptimizerConfig = AQUILA_OPTIMIZER,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self.save_hyperparameters(ignore=["tokenizer"])
        self.vision = self.create_vision(
            vision_encoder,
            features_only=True,
            out_indices=tuple(feature_stages),
        )
        channels = self.vision.feature_info.channels()
        windows = window_sizes(self.vision.feature_info.reduction(), self.image_size, grid_size)
        self.window_sizes = windows
        width = self.llm_width
        dim = width if sfi_dim is None else sfi_dim
        self.projectors = nn.ModuleList(MapProjector(c, dim) for c in channels)
        dims = [dim] * len(channels)
        positions = windows if key_positions else None

        def sfi(learnable_queries: bool) -> SpatialFeatureIntegration:
            return SpatialFeatureIntegration(
                dim,
                grid_size,
                dims,
                num_heads,
                learnable_queries=learnable_queries,
                window_sizes=positions,
                block=block,
            )

        if connector == "sfi":
            self.connector: nn.Module = sfi(True)
        else:
            self.connector = ConvConcatBaseline(
                dim, grid_size, dims, downsample="conv", window_sizes=windows
            )
        self.connector_proj = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.mda = nn.ModuleDict(
            {str(layer): MultiLayerAlignment(width, sfi(False)) for layer in mda_layers}
        )
        self.inject_layers = sorted(mda_layers)
        self.metrics = self.generation_metrics(question_types)
        self.setup_stage()

    def multiscale_features(self, image: Tensor) -> list[Tensor]:
        """The projected stage maps ``B×sfi_dim×H_s×W_s`` (A-CCN)."""
        return [p(f) for p, f in zip(self.projectors, self.vision(image), strict=True)]

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        features = self.multiscale_features(image)
        return self.connector_proj(self.connector(features)), features

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """MDA: SFI with the visual hidden states as queries (written back in place)."""
        return self.mda[str(layer)](context, visual.to(context[0].dtype))
