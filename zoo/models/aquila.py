"""Aquila: a remote-sensing vision-language generator over multi-scale CLIP-ConvNeXt features.

* A-CCN: a ConvNeXt (CLIP-ConvNeXt-XXL at 1024 px in the paper) without its head gives four
  stage maps; four two-layer MLP projectors map each stage's channels to the SFI width
  ``sfi.dim`` (C = 1024 in the paper).
* SFI: a learnable L×L query grid; each query cross-attends only to the sub-region of each
  scale that lies under it, the keys carrying their absolute position inside the window; the
  L² outputs, projected to the LLM width, are the LLM's visual tokens.
* MDA: SFI again inside the LLM, before the configured decoder layers, with the hidden states
  at the visual positions as queries (projected to ``sfi.dim`` and the update projected back),
  written back in place (an empty list switches it off).
* Ablations of the paper's Table 5: ``sfi: {connector: conv}`` (the "Concat" baseline: a
  convolutional module merging the scales instead of SFI) and ``sfi: {mda_layers: []}``.
Training is two stages (configs/aquila/stage1.yaml, stage2.yaml): SFI only, then SFI + LoRA.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from zoo.encoders.llm import LLMSpec
from zoo.encoders.vision import VisionSpec
from zoo.layers.projector import MapProjector
from zoo.layers.sfi import ConvConcatBaseline, SpatialFeatureIntegration
from zoo.models.base import OptimizerConfig, as_group
from zoo.models.decoding import GenerationConfig
from zoo.models.generator import DEFAULT_SPEED, SpeedConfig, VisionLanguageGenerator
from zoo.models.location_token import LocationToken
from zoo.models.stages import TrainingStage

#: AdamW and schedule of the paper's recipe (the configs set each stage's own).
AQUILA_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.06
)

__all__ = ["AQUILA_VISION", "Aquila", "MultiLayerAlignment", "SFIConfig", "window_sizes"]


def window_sizes(reductions: Sequence[int], image_size: int, grid_size: int) -> list[int]:
    """Each stage's SFI window side ``k_s = (image_size / reduction_s) / grid_size``.

    Args:
        reductions: each stage's stride.
        image_size: the input side in pixels.
        grid_size: L, the query grid's side.

    Returns:
        One window side per stage.

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

    Args:
        width: the LLM's hidden size.
        sfi: the SFI block (its ``dim`` is the projected width).
    """

    def __init__(self, width: int, sfi: SpatialFeatureIntegration) -> None:
        super().__init__()
        self.sfi = sfi
        projected = sfi.dim != width
        self.in_proj = nn.Linear(width, sfi.dim) if projected else None
        self.out_proj = nn.Linear(sfi.dim, width) if projected else None

    def forward(self, features: Sequence[Tensor], hidden: Tensor) -> Tensor:
        """The updated hidden states.

        Args:
            features: the projected stage maps.
            hidden: the visual hidden states ``B×L²×width``.

        Returns:
            The new hidden states ``B×L²×width``.
        """
        if self.in_proj is None or self.out_proj is None:
            return self.sfi(features, hidden)
        queries = self.in_proj(hidden)
        return hidden + self.out_proj(self.sfi(features, queries) - queries)


@dataclass(frozen=True)
class SFIConfig:
    """Aquila's connector: the stage maps, SFI and MDA (``sfi:`` in a config).

    Attributes:
        feature_stages: which backbone stages feed SFI (each map must be a multiple of the grid).
        grid_size: L; the LLM sees L² visual tokens (32 -> 1024 tokens in the paper).
        num_heads: attention heads of SFI and MDA (1 for ``block: paper``).
        dim: width C of the projectors, SFI and MDA (paper: 1024; None: the LLM width).
        block: ``rich`` (multi-head, norms, MLP, scale embeddings) or ``paper`` (§3.3's
            equations; see :class:`~zoo.layers.sfi.SpatialFeatureIntegration`).
        key_positions: add learnable absolute positions inside each window to the keys of SFI
            and MDA (the paper's positional encodings in the cross-attention).
        connector: ``sfi`` or ``conv`` (Table 5's "Concat" baseline: per-scale strided
            depthwise convolutions, concatenated and merged by a 1x1 projection).
        mda_layers: LLM decoder layers (0-based) preceded by an MDA block (empty: MDA off).
    """

    feature_stages: list[int] = field(default_factory=lambda: [0, 1, 2])
    grid_size: int = 4
    num_heads: int = 4
    dim: int | None = None
    block: Literal["rich", "paper"] = "rich"
    key_positions: bool = True
    connector: Literal["sfi", "conv"] = "sfi"
    mda_layers: list[int] = field(default_factory=lambda: [1, 3])


#: Aquila's default image encoder: the zoo's offline ConvNeXt (the paper: CLIP-ConvNeXt-XXL).
AQUILA_VISION = VisionSpec(name="zoo_convnext_tiny")


class Aquila(VisionLanguageGenerator):
    """Aquila with SFI and MDA over a swappable ConvNeXt and LLM.

    Args:
        vision: the image encoder: a timm ConvNeXt (``convnext_xxlarge.clip_laion2b_soup`` in
            the paper), ``hf-hub:org/model`` or a local folder; any timm model with
            ``features_only``.
        sfi: the stage maps, SFI and MDA (:class:`SFIConfig`).
        question_types: VQA question types reported separately.
        llm: the LLM (see :class:`~zoo.models.generator.VisionLanguageGenerator`).
        llava: a LLaVA-1.5 checkpoint folder (an error for Aquila: no stage maps).
        llava_projector: LLaVA-1.5's projector (an error for Aquila: no such projector).
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
    """

    def __init__(
        self,
        vision: VisionSpec = AQUILA_VISION,
        sfi: SFIConfig = SFIConfig(),
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
        optimizer: OptimizerConfig = AQUILA_OPTIMIZER,
        location: LocationToken | None = None,
    ) -> None:
        self.sfi_config = as_group(SFIConfig, sfi, "sfi")
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
        """The ConvNeXt's stage maps, their projectors, SFI (or the Concat baseline) and MDA."""
        config = self.sfi_config
        self.vision = self.create_vision(
            features_only=True, out_indices=tuple(config.feature_stages)
        )
        channels = self.vision.feature_info.channels()
        reductions = self.vision.feature_info.reduction()
        windows = window_sizes(reductions, self.image_size, config.grid_size)
        self.window_sizes = windows
        width = self.llm_width
        dim = width if config.dim is None else config.dim
        self.projectors = nn.ModuleList(MapProjector(c, dim) for c in channels)
        dims = [dim] * len(channels)
        positions = windows if config.key_positions else None

        def sfi(learnable_queries: bool) -> SpatialFeatureIntegration:
            return SpatialFeatureIntegration(
                dim,
                config.grid_size,
                dims,
                config.num_heads,
                learnable_queries=learnable_queries,
                window_sizes=positions,
                block=config.block,
            )

        if config.connector == "sfi":
            self.connector: nn.Module = sfi(True)
        else:
            self.connector = ConvConcatBaseline(
                dim, config.grid_size, dims, downsample="conv", window_sizes=windows
            )
        self.connector_proj = nn.Linear(dim, width) if dim != width else nn.Identity()
        self.mda = nn.ModuleDict(
            {str(layer): MultiLayerAlignment(width, sfi(False)) for layer in config.mda_layers}
        )
        self.inject_layers = sorted(config.mda_layers)
        self.metrics = self.generation_metrics(self.question_types)

    def parameter_groups_for_stage(self) -> dict[str, list[nn.Module]]:
        """``vision``: the ConvNeXt; ``connector``: projectors, SFI, MDA; ``llm``: the LLM.

        Returns:
            The groups the training stage freezes or trains.
        """
        return {
            "vision": [self.vision],
            "connector": [self.projectors, self.connector, self.connector_proj, self.mda],
            "llm": [self.llm],
        }

    def multiscale_features(self, image: Tensor) -> list[Tensor]:
        """The projected stage maps (A-CCN).

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            One ``B×sfi.dim×H_s×W_s`` map per stage.
        """
        return [p(f) for p, f in zip(self.projectors, self.vision(image), strict=True)]

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        """SFI's L² tokens in the LLM width, and the projected maps (MDA's context).

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            The tokens ``B×L²×llm_width`` and the stage maps.
        """
        features = self.multiscale_features(image)
        return self.connector_proj(self.connector(features)), features

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """MDA: SFI with the visual hidden states as queries (written back in place).

        Args:
            layer: the decoder layer about to run.
            visual: the visual hidden states ``B×L²×D``.
            context: the projected stage maps.

        Returns:
            The new visual hidden states.
        """
        return self.mda[str(layer)](context, visual.to(context[0].dtype))
