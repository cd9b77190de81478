"""The generator core that Aquila, FUSE and GeoPix share (Prismatic VLMs / LLaVA anatomy).

A generator = vision backbone + connector (projector, SFI ...) + causal LM. The core builds the
LLM (or takes LLaVA's parts), then calls the hooks a family fills, as torchgeo's ``BaseTask``:

* :meth:`VisionLanguageGenerator.configure_models`: the vision side, connector and any
  injection modules (``self.vision``, ...; ``self.inject_layers``, ``self.metrics``);
* :meth:`VisionLanguageGenerator.parameter_groups_for_stage`: which modules are ``vision``,
  ``connector`` and ``llm`` (the training stage freezes by these groups);
* :meth:`VisionLanguageGenerator.llava_projector_target` (the module LLaVA's projector loads
  into) and :meth:`VisionLanguageGenerator.trained_token_ids` (token rows that train in every
  stage), where the family has them;

and then applies the training stage itself (:mod:`zoo.models.stages`). A family implements
:meth:`VisionLanguageGenerator.visual_tokens`; if it injects visual features inside the LLM
(Aquila's MDA, FUSE's recurrent injection) also :meth:`VisionLanguageGenerator.inject`
(visual hidden states in, new ones out; :mod:`zoo.models.injection_hooks` gathers and
scatters them, so text positions cannot change).

Conventions:
* the data tokenizes; each sample has one ``<image>`` token, which the model replaces by its
  visual tokens (vectorized splice, any position, left or right padding);
* labels are -100 except on answers (done by the data) and on visual tokens (done here).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from zoo.conversation_formats import (
    generation_prompt_text,
    resolve_conversation,
    stop_token_ids,
)
from zoo.data.batch import ConversationBatch
from zoo.encoders.llava import LlavaParts, LlavaProjector, load_llava, load_llava_projector
from zoo.encoders.llm import LLMSpec, build_llm, check_vocabulary, decoder_layers, fit_vocabulary
from zoo.encoders.location import validate_locations
from zoo.encoders.sources import building_architecture_only
from zoo.encoders.vision import VisionSpec, adapt_clip_channels, create_vision_model
from zoo.layers.attention import dense_attention_mask
from zoo.metrics.generation import GenerationMetrics
from zoo.models.base import OptimizerConfig, ZooTask, as_group, regroup_hyperparameters
from zoo.models.decoding import GenerationConfig, repeat_rows
from zoo.models.injection_hooks import InjectionHooks
from zoo.models.location_token import LocationToken, LocationTokenEncoder
from zoo.models.splice import splice_visual_tokens
from zoo.models.stages import (
    TrainingStage,
    add_lora,
    freeze_groups,
    load_stage_checkpoint,
    merge_lora,
    train_token_rows,
)

__all__ = [
    "DEFAULT_SPEED",
    "GENERATOR_OPTIMIZER",
    "GenerationConfig",
    "SpeedConfig",
    "TrainingStage",
    "VisionLanguageGenerator",
    "repeat_rows",
    "splice_visual_tokens",
]

#: AdamW defaults of the generators (LLaVA-style betas).
GENERATOR_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.03
)


@dataclass(frozen=True)
class SpeedConfig:
    """Memory and speed switches of a generator (``speed:`` in a config).

    Attributes:
        activation_checkpointing: recompute the LLM's decoder layers and the vision tower's
            blocks in the backward pass instead of keeping their activations (non-reentrant
            checkpointing of the layers' ``forward``: the injection hooks stay outside it).
        compile: ``torch.compile`` each LLM decoder layer and vision block in place (opt-in;
            the first steps pay the compilation).
    """

    activation_checkpointing: bool = False
    compile: bool = False


#: Neither switch: the families' default ``speed``.
DEFAULT_SPEED = SpeedConfig()


def zoo_added_tokens(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """The tokens the zoo adds to an LLM's tokenizer: ``<image>`` and GeoPix's ``[SEGs_i]``.

    Args:
        tokenizer: the data's tokenizer.

    Returns:
        The added tokens it holds.
    """
    return {"<image>"} | {t for t in tokenizer.get_vocab() if re.fullmatch(r"\[SEG\d+_\d+\]", t)}


class VisionLanguageGenerator(ZooTask):
    """Base of the zoo's generators: the LLM, the splice, decoding and the Lightning steps.

    A family declares its own arguments and passes these on; its ``__init__`` keeps its
    groups as attributes, then calls this one, which builds the LLM, calls the family's
    :meth:`configure_models` and applies the training stage (:mod:`zoo.models.stages`).

    Args:
        vision: the image encoder (:class:`~zoo.encoders.vision.VisionSpec`: a timm name or a
            CLIP folder, its published weights, a weight file).
        llm: the LLM, its tokenizer and conversation format (:class:`~zoo.encoders.llm.LLMSpec`;
            a name alone: ``tiny``/``small`` random Llama, ``smollm2``, a Hugging Face id or a
            folder). The zoo CLI gives the data the same spec. A tokenizer that does not belong
            to the LLM is an error (:func:`~zoo.encoders.llm.check_vocabulary`).
        llava: a LLaVA-1.5 checkpoint folder (transformers' or the original repository's
            layout): its CLIP tower, projector (:meth:`llava_projector_target`), LLM and,
            through the data (the CLI links it), tokenizer, chat template and image processor
            replace ``vision``, ``llm`` and the data's settings; the family's own modules start
            as configured.
        llava_projector: LLaVA-1.5's projector alone into :meth:`llava_projector_target` (a
            folder with ``mm_projector.bin``, a LLaVA checkpoint folder or a weight file); the
            vision encoder, LLM and data stay as configured (the FUSE authors' start).
        stage: what this training stage trains, LoRA, and the checkpoint it starts from.
        generation: decoding settings for validation, test and predict.
        val_generate_batches: validation batches decoded for the generation metrics per epoch.
        speed: activation checkpointing and ``torch.compile`` (:class:`SpeedConfig`).
        tokenizer: the LLM's tokenizer, built by the data from ``llm`` (linked from the data).
        class_names: scene classes (linked from the data).
        image_size: input size in pixels (linked from the data).
        in_channels: the bands of an image (linked from the data's ``num_channels``): the
            vision encoder reads them (timm's ``in_chans``; a CLIP / LLaVA tower's patch
            embedding adapted by the same rule).
        optimizer: AdamW and its warm-up + cosine schedule.
        location: a location token after the visual tokens
            (:class:`~zoo.models.location_token.LocationToken`: the SatCLIP / FLAVARS location
            encoder, new or from a FLAVARS checkpoint); every batch then needs ``location``.
            None (the default): no token, the model as before.

    Raises:
        ValueError: no tokenizer, a tokenizer without ``<image>``, or both ``llava`` and
            ``llava_projector``.
    """

    #: Visual tokens before the whole text instead of at the ``<image>`` token (a family that
    #: follows its authors there sets it: FUSE's ``image_placement``).
    image_first: bool = False

    def __init__(
        self,
        vision: VisionSpec | None = None,
        llm: LLMSpec | str = "tiny",
        llava: str | None = None,
        llava_projector: str | None = None,
        stage: TrainingStage | None = None,
        generation: GenerationConfig | None = None,
        val_generate_batches: int = 2,
        speed: SpeedConfig | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        class_names: list[str] | None = None,
        image_size: int = 64,
        in_channels: int = 3,
        optimizer: OptimizerConfig = GENERATOR_OPTIMIZER,
        location: LocationToken | None = None,
    ) -> None:
        super().__init__(optimizer)
        # The family's arguments too (Lightning reads every __init__ frame of the instance).
        self.save_hyperparameters(ignore=["tokenizer"])
        if tokenizer is None:
            raise ValueError(
                f"{type(self).__name__} needs the data's tokenizer: pass tokenizer="
                "datamodule.tokenizer (the zoo CLI links it from the datamodule)"
            )
        image_token = tokenizer.convert_tokens_to_ids("<image>")
        if image_token is None or image_token == tokenizer.unk_token_id:
            raise ValueError("the tokenizer has no '<image>' token; build it with chat=True")
        self.tokenizer = tokenizer
        self.image_token_id = int(image_token)
        spec = LLMSpec.of(llm)
        #: The conversation format the data wrote (the model stops generating on its end token).
        self.conversation = resolve_conversation(spec.conversation, tokenizer, llava is not None)
        self.stop_token_ids = stop_token_ids(self.conversation, tokenizer)
        self.class_names = list(class_names or [])
        self.image_size = image_size
        self.in_channels = in_channels
        self.vision_spec = VisionSpec.of(vision)
        # Checkpoints store the dataclasses as dicts (see on_save_checkpoint).
        self.stage = as_group(TrainingStage, stage, "stage")
        self.generation = as_group(GenerationConfig, generation, "generation")
        self.speed = as_group(SpeedConfig, speed, "speed")
        self.location_config = (
            None if location is None else as_group(LocationToken, location, "location")
        )
        self.val_generate_batches = val_generate_batches
        #: The loaded LLaVA checkpoint until the stage set-up has taken its parts.
        self._llava: LlavaParts | None = None
        #: LLaVA's projector (with ``llava`` or ``llava_projector``) until the stage set-up.
        self._llava_projector: LlavaProjector | None = None
        if llava_projector is not None:
            if llava is not None:
                raise ValueError("llava and llava_projector: give one (llava brings its projector)")
            if not building_architecture_only():  # else the checkpoint holds the projector
                self._llava_projector = load_llava_projector(llava_projector)
        if llava is not None:
            self._llava = load_llava(llava, getattr(torch, spec.dtype) if spec.dtype else None)
            self._llava_projector = LlavaProjector(self._llava.projector, self._llava.feature_layer)
            rank_zero_info(
                f"llava {llava} ({self._llava.layout} layout) replaces llm {spec.name!r}"
            )
            check_vocabulary(self._llava.llm, tokenizer, llava, zoo_added_tokens(tokenizer))
            self.llm = fit_vocabulary(self._llava.llm, len(tokenizer))
            if image_size != self._llava.vision.image_size:
                rank_zero_warn(
                    f"image_size {image_size} -> {self._llava.vision.image_size}, the LLaVA tower's"
                )
                self.image_size = self._llava.vision.image_size
        else:
            self.llm = build_llm(
                spec.name,
                len(tokenizer),
                spec.pretrained,
                spec.gguf_file,
                spec.dtype,
                check=lambda model: check_vocabulary(
                    model, tokenizer, spec.name, zoo_added_tokens(tokenizer)
                ),
            )
        self.llm.config.pad_token_id = tokenizer.pad_token_id
        #: Decoder layers (0-based) the family's :meth:`inject` runs before.
        self.inject_layers: list[int] = []
        self.metrics: nn.ModuleDict | None = None
        self.injection_hooks = InjectionHooks(self.inject_at)
        self.configure_models()
        #: The location token's encoder and projection (``location``), or None.
        self.location_token: LocationTokenEncoder | None = None
        if self.location_config is not None:
            self.location_token = LocationTokenEncoder(self.location_config, self.llm_width)
        self._setup_stage()

    @classmethod
    def upgrade_hyperparameters(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's hyper-parameters from before the typed groups, in today's keys.

        zoo 0.1's flat keys move into their groups (``vision_encoder`` -> ``vision.name``,
        ``compile`` -> ``speed.compile``, a family's connector settings into its groups) per
        :data:`zoo.errors.RENAMED_KEYS`, the table that names the new keys of an old YAML too.

        Args:
            hparams: the hyper-parameters a checkpoint stored.

        Returns:
            The hyper-parameters this version's constructor takes.
        """
        import inspect

        parameters = inspect.signature(cls.__init__).parameters
        return regroup_hyperparameters(VisionSpec.upgrade(dict(hparams)), parameters)

    # ----------------------------------------------------------------- subclass interface
    def configure_models(self) -> None:
        """Build the family's modules: the vision side, connector and injection (a hook).

        Called by :meth:`__init__` once the LLM exists (``self.llm``, :attr:`llm_width`); it
        sets ``self.vision`` and the family's modules, ``self.inject_layers`` when it injects
        and ``self.metrics``. The training stage is applied afterwards, by the core.

        Raises:
            NotImplementedError: the family does not implement it.
        """
        raise NotImplementedError

    def parameter_groups_for_stage(self) -> dict[str, list[nn.Module]]:
        """The modules of each parameter group the training stage freezes or trains (a hook).

        Returns:
            ``{"vision": [...], "connector": [...], "llm": [...]}``; every parameter of the
            model in exactly one group (the stage set-up checks it).

        Raises:
            NotImplementedError: the family does not implement it.
        """
        raise NotImplementedError

    def llava_projector_target(self) -> nn.Module | None:
        """The module LLaVA's projector loads into (``llava``, ``llava_projector``; a hook).

        Returns:
            The family's Linear-GELU-Linear projector from the tower into the LLM, or None
            (the default) when it has none, which makes ``llava`` an error.
        """
        return None

    def trained_token_ids(self) -> Tensor | None:
        """Tokens whose embedding and ``lm_head`` rows train in every stage (a hook).

        Returns:
            Their ids (GeoPix's segmentation tokens), or None (the default).
        """
        return None

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        """The visual tokens of ``image`` and the family's injection context.

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            ``B×N×llm_width`` tokens for the LLM input, and any context for :meth:`inject`.

        Raises:
            NotImplementedError: the family does not implement it.
        """
        raise NotImplementedError

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """New hidden states for the visual positions before decoder layer ``layer``.

        Only for the layers in ``self.inject_layers``; :meth:`inject_at` writes them back.

        Args:
            layer: the decoder layer (0-based) about to run.
            visual: the hidden states at the visual positions ``B×N×D``.
            context: what :meth:`visual_tokens` returned beside the tokens.

        Returns:
            The new hidden states ``B×N×D``.

        Raises:
            NotImplementedError: a family that injects does not implement it.
        """
        raise NotImplementedError

    def inject_at(self, layer: int, hidden: Tensor, positions: Tensor, context: Any) -> Tensor:
        """Apply :meth:`inject` to the visual positions of ``hidden``; text is unchanged.

        Args:
            layer: the decoder layer (0-based) about to run.
            hidden: its input hidden states ``B×T×D``.
            positions: the visual positions ``B×N``.
            context: the family's context.

        Returns:
            ``hidden`` with the visual positions rewritten.

        Raises:
            ValueError: positions for another number of rows than ``hidden`` has.
        """
        if positions.shape[0] != hidden.shape[0]:  # gather would silently use the first rows
            raise ValueError(
                f"inject_at: {hidden.shape[0]} hidden-state rows but positions for "
                f"{positions.shape[0]} (under beam search, expand them per beam: repeat_rows)"
            )
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        updated = self.inject(layer, hidden.gather(1, index), context)
        return hidden.scatter(1, index, updated.to(hidden.dtype))

    # ----------------------------------------------------------------- shared builders
    def create_vision(self, **timm_kwargs: Any) -> nn.Module:
        """The family's vision encoder per :attr:`vision_spec`; with ``llava``, its CLIP tower.

        Args:
            **timm_kwargs: the family's timm arguments (``features_only``, ``img_size`` ...).

        Returns:
            The encoder.

        Raises:
            ValueError: ``llava`` with a family that needs stage maps (``features_only``).
        """
        spec = self.vision_spec
        if self._llava is None:
            return create_vision_model(
                spec.name,
                spec.pretrained,
                spec.checkpoint,
                in_chans=self.in_channels,
                **timm_kwargs,
            )
        if timm_kwargs.get("features_only"):
            raise ValueError(
                f"llava: {type(self).__name__} needs stage maps (features_only) but a LLaVA "
                "checkpoint has a one-scale CLIP ViT; use llava with FUSE or GeoPix"
            )
        rank_zero_info(f"llava: the checkpoint's CLIP tower replaces vision.name {spec.name!r}")
        adapt_clip_channels(self._llava.vision.model, self.in_channels)
        return self._llava.vision

    @property
    def llava_feature_layer(self) -> int | None:
        """The tower block (negative from the end) LLaVA's projector was trained on; None
        without llava / llava_projector."""
        return None if self._llava_projector is None else self._llava_projector.feature_layer

    @property
    def llm_width(self) -> int:
        """The LLM's hidden size."""
        return self.llm.config.hidden_size

    def image_features(self, image: Tensor) -> Tensor:
        """Pooled features of the vision tower (frozen-feature evaluation).

        timm's head pooling, or the deepest map averaged for a ``features_only`` tower.

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            ``B×D`` features.
        """
        if hasattr(self.vision, "forward_head"):
            return self.vision.forward_head(self.vision.forward_features(image), pre_logits=True)
        return self.vision(image)[-1].mean(dim=(-2, -1))

    # ------------------------------------------------------------------------- stages
    def _setup_stage(self) -> None:
        """LLaVA's projector, the previous stage's weights, freezing by the family's groups,
        LoRA, the always-trained token rows, the injection hooks, speed."""
        stage = self.stage
        # Loading a trained model (zoo.load): its checkpoint holds these weights.
        if self._llava_projector is not None and not building_architecture_only():
            self._llava_projector.load_into(self.llava_projector_target(), type(self).__name__)
        self._llava = self._llava_projector = None
        if stage.init_checkpoint is not None and not building_architecture_only():
            load_stage_checkpoint(self, stage.init_checkpoint)
        groups = self.parameter_groups_for_stage()
        if self.location_token is not None:  # the token's projection trains with the connector
            groups = {**groups, "connector": [*groups["connector"], self.location_token]}
        freeze_groups(self, groups, stage)
        if self.location_token is not None and self.location_config.frozen:
            self.location_token.encoder.requires_grad_(False)
        self.llm = add_lora(self.llm, stage)
        tokens = self.trained_token_ids()
        if tokens is not None and not stage.train_llm:
            train_token_rows(self, self.llm, tokens)
        self.install_injection_hooks()
        self._setup_speed()

    def install_injection_hooks(self, layers: Sequence[int] | None = None) -> None:
        """Hook the LLM's decoder layers the family injects before (replacing earlier hooks).

        Args:
            layers: the layers (0-based); None: ``self.inject_layers``.
        """
        self.injection_hooks.install(self.llm, self.inject_layers if layers is None else layers)

    def _vision_blocks(self) -> list[nn.Module]:
        """The vision tower's blocks (a timm ViT's, each ConvNeXt stage's, or the layers that a
        ``llava:`` CLIP tower names ``blocks``)."""
        containers = [
            module
            for name, module in self.vision.named_modules()
            if name.rsplit(".", 1)[-1] == "blocks"
        ]
        if not containers and isinstance(getattr(self.vision, "blocks", None), nn.ModuleList):
            containers = [self.vision.blocks]  # CLIPVisionTower: transformers' encoder layers
        return [block for module in containers for block in module]

    def _setup_speed(self) -> None:
        """Activation checkpointing and ``torch.compile`` as configured."""
        if self.speed.activation_checkpointing:
            self.llm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            if not hasattr(self.vision, "set_grad_checkpointing"):
                raise ValueError(
                    "speed.activation_checkpointing: the vision tower "
                    f"{type(self.vision).__name__} has no set_grad_checkpointing (timm models do)"
                )
            self.vision.set_grad_checkpointing(True)
        if self.speed.compile:
            for block in [*decoder_layers(self.llm), *self._vision_blocks()]:
                block.compile()

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the LLM's weights (a plain model afterwards)."""
        merged = merge_lora(self.llm)
        if merged is not self.llm:
            self.llm = merged
            self.install_injection_hooks()

    def configure_model(self) -> None:
        """Shard the model under Lightning's ``ModelParallelStrategy`` (FSDP2), else nothing.

        Per decoder layer and vision block (:func:`~zoo.strategies.fully_shard_generator`; the
        zoo's :class:`~zoo.strategies.GeneratorFSDPStrategy` shards by its own plan).
        """
        from zoo.strategies import GeneratorFSDPStrategy, fully_shard_generator

        if self.device_mesh is None or any(
            type(p).__name__ == "DTensor" for p in self.parameters()
        ):
            return
        strategy = self.trainer.strategy
        if isinstance(strategy, GeneratorFSDPStrategy):
            strategy.shard(self)
        else:
            fully_shard_generator(self, self.device_mesh["data_parallel"])

    # ------------------------------------------------------------------------ forward
    def add_location_token(self, visual: Tensor, location: Tensor | None) -> Tensor:
        """The visual tokens with the location token appended (``location``), else as given.

        Args:
            visual: the family's visual tokens ``B×N×D``.
            location: the batch's float ``B×2`` (lat, lon) in degrees, or None (ignored by a
                model without a location token).

        Returns:
            ``B×(N+1)×D`` with the token, ``visual`` itself without.

        Raises:
            ValueError: the model has a location token and ``location`` is None, or a number of
                rows other than the images'.
        """
        if self.location_token is None:
            return visual
        if location is None:
            raise ValueError(
                f"{type(self).__name__} was built with a location token (location: "
                f"{self.location_config}) and needs the batch's 'location' (float B×2, lat and "
                "lon in degrees): give data whose records have coordinates ('location': [lat, "
                "lon] or 'lat'/'lon'; the embedded data has them), pass location= to forward / "
                "generate / answer, or build the model with location: null"
            )
        if location.shape[0] != visual.shape[0]:
            raise ValueError(
                f"location has {location.shape[0]} rows for {visual.shape[0]} images; give one "
                "(lat, lon) per image"
            )
        token = self.location_token(location.to(visual.device)).to(visual.dtype)
        return torch.cat([visual, token], dim=1)

    def spliced_inputs(
        self,
        image: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None,
        location: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor, Any, int]:
        """The LLM's input embeddings: the visual tokens (and location token) spliced in.

        Args:
            image: normalized images ``B×C×H×W``.
            input_ids: token ids ``B×T`` with one ``<image>`` each.
            attention_mask: ``B×T``.
            labels: ``B×T`` targets, or None.
            location: float ``B×2`` (lat, lon) in degrees, or None (see
                :meth:`add_location_token`).

        Returns:
            Embeddings ``B×T'×D``, attention mask, labels (-100 on the visual and location
            tokens), the positions of all ``N'`` spliced tokens ``B×N'``, the family's context
            and ``N``, the number of the family's own visual tokens (the first ``N`` positions;
            the location token, where there is one, is the last).
        """
        visual, context = self.visual_tokens(image)
        count = visual.shape[1]
        visual = self.add_location_token(visual, location)
        embeds = self.llm.get_input_embeddings()(input_ids)
        embeds, mask, labels, positions = splice_visual_tokens(
            embeds,
            input_ids,
            attention_mask,
            labels,
            self.image_token_id,
            visual,
            self.image_first,
        )
        return embeds, mask, labels, positions, context, count

    def _inputs(
        self,
        image: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None,
        location: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        embeds, mask, labels, positions, context, count = self.spliced_inputs(
            image, input_ids, attention_mask, labels, location
        )
        if self.inject_layers:
            if positions.shape[1] != count:  # the injection rewrites the image's tokens only
                positions = positions[:, :count]
            self.injection_hooks.start(positions, context, embeds.shape[1])
        else:
            self.injection_hooks.stop()
        return embeds, mask, labels

    def teacher_forced(
        self, embeds: Tensor, attention_mask: Tensor, labels: Tensor | None, **kwargs: Any
    ) -> Any:
        """The LLM over whole sequences (training, evaluation losses).

        No KV cache, and the 4-D attention mask built here, so no step copies a value from the
        device to the host.

        Args:
            embeds: the spliced input embeddings ``B×T×D``.
            attention_mask: ``B×T``.
            labels: ``B×T`` targets, or None.
            **kwargs: more arguments of the LLM's forward (``output_hidden_states``).

        Returns:
            The Hugging Face output.
        """
        mask = dense_attention_mask(
            attention_mask, self.llm.config._attn_implementation, causal=True, dtype=embeds.dtype
        )
        return self.llm(
            inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False, **kwargs
        )

    def forward(
        self,
        image: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None = None,
        location: Tensor | None = None,
    ) -> Any:
        """Teacher-forced pass.

        Args:
            image: normalized images ``B×C×H×W``.
            input_ids: token ids ``B×T`` with one ``<image>`` each.
            attention_mask: ``B×T``.
            labels: ``B×T`` targets, or None.
            location: float ``B×2`` (lat, lon) in degrees; needed by a model with a location
                token, ignored by one without.

        Returns:
            The Hugging Face output (``loss`` when labels are given).
        """
        embeds, mask, labels = self._inputs(image, input_ids, attention_mask, labels, location)
        try:
            return self.teacher_forced(embeds, mask, labels)
        finally:
            self.injection_hooks.stop()

    @torch.no_grad()
    def generate_ids(
        self,
        image: Tensor,
        prompt_ids: Tensor,
        prompt_attention_mask: Tensor,
        generation: GenerationConfig | None = None,
        location: Tensor | None = None,
    ) -> Tensor:
        """The answers' token ids to left-padded prompts: the one decoding path of every family.

        Decoded with the KV cache by Hugging Face's ``generate`` per :attr:`generation`; the
        injection hooks see the prompts' rows expanded per beam.

        Args:
            image: normalized images ``B×C×H×W``.
            prompt_ids: left-padded prompts ``B×T``.
            prompt_attention_mask: ``B×T``.
            generation: decoding settings for this call (None: :attr:`generation`); the
                number of return sequences must stay :attr:`generation`'s.
            location: float ``B×2`` (lat, lon) in degrees (a model with a location token).

        Returns:
            Ids ``(B·R)×T`` (``R`` = ``num_return_sequences``, each prompt's answers adjacent,
            best first).
        """
        generation = generation or self.generation
        embeds, mask, _ = self._inputs(image, prompt_ids, prompt_attention_mask, None, location)
        try:
            return self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                **generation.generate_kwargs(),
                eos_token_id=self.stop_token_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        finally:
            self.injection_hooks.stop()

    def decode_answers(self, ids: Tensor) -> list[list[str]]:
        """Texts of :meth:`generate_ids`' output.

        Args:
            ids: its token ids.

        Returns:
            One list of ``R`` answers per prompt.
        """
        texts = [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        r = self.generation.num_return_sequences
        return [texts[i : i + r] for i in range(0, len(texts), r)]

    def generate(
        self,
        image: Tensor,
        prompt_ids: Tensor,
        prompt_attention_mask: Tensor,
        location: Tensor | None = None,
    ) -> list[str]:
        """The best answer to each left-padded prompt (see :meth:`generate_ids`).

        Args:
            image: normalized images ``B×C×H×W``.
            prompt_ids: left-padded prompts ``B×T``.
            prompt_attention_mask: ``B×T``.
            location: float ``B×2`` (lat, lon) in degrees (a model with a location token).

        Returns:
            One answer per prompt.
        """
        return [
            a[0]
            for a in self.decode_answers(
                self.generate_ids(image, prompt_ids, prompt_attention_mask, location=location)
            )
        ]

    # ---------------------------------------------------------------------- inference
    def prepare_images(self, images: Tensor | Sequence[Any] | Any) -> Tensor:
        """Images as the normalized batch the model reads, on its device and dtype.

        Args:
            images: a ``B×C×H×W`` tensor of normalized images (``torch.stack([transform(im)
                ...])``), or raw images (a PIL image, or a list of PIL images / ``C×H×W``
                arrays in the units the model was trained on) that :attr:`transform` prepares.

        Returns:
            The ``B×C×S×S`` batch.

        Raises:
            TypeError: a single array or tensor that is not a ``B×C×H×W`` batch.
            ValueError: an empty list.
        """
        if isinstance(images, Tensor) and images.ndim == 4:
            batch = images
        elif isinstance(images, (list, tuple)):
            if not images:
                raise ValueError("images: give at least one image")
            transform = self.transform
            batch = torch.stack([transform(image) for image in images])
        elif hasattr(images, "getbands"):  # one PIL image
            batch = self.transform(images)[None]
        else:
            shape = tuple(getattr(images, "shape", ()))
            raise TypeError(
                f"images: expected a B×C×H×W tensor of transformed images or a list of raw "
                f"images (PIL, C×H×W arrays), got {type(images).__name__} of shape {shape} "
                "(wrap one raw image in a list; stack transformed ones)"
            )
        dtype = self.dtype if self.dtype.is_floating_point else torch.float32
        return batch.to(device=self.device, dtype=dtype)

    def prompt_batch(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Left-padded prompts of ``questions`` in the model's conversation format.

        Each question is one user turn followed by the generation prompt, as the data's collate
        writes it (:func:`~zoo.conversation_formats.generation_prompt_text`: ``<image>`` put in
        front when missing); one tokenizer call pads them all on the left.

        Args:
            questions: one question per image.

        Returns:
            ``prompt_ids`` and ``prompt_attention_mask`` ``B×T`` on the model's device.
        """
        texts = [generation_prompt_text(self.conversation, self.tokenizer, q) for q in questions]
        encoded = self.tokenizer(
            texts,
            add_special_tokens=False,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        return (
            encoded["input_ids"].to(self.device),
            encoded["attention_mask"].to(self.device),
        )

    def _inference_inputs(
        self, images: Tensor | Sequence[Any] | Any, questions: str | Sequence[str]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The image batch and left-padded prompts of :meth:`answer`'s arguments."""
        image = self.prepare_images(images)
        if isinstance(questions, str):
            questions = [questions] * len(image)
        questions = list(questions)
        if len(questions) != len(image) or not all(isinstance(q, str) for q in questions):
            raise ValueError(
                f"questions: give one string (asked of every image) or one per image; got "
                f"{len(questions)} for {len(image)} images"
            )
        return image, *self.prompt_batch(questions)

    def _generation_for(self, max_new_tokens: int | None) -> GenerationConfig:
        """:attr:`generation`, with ``max_new_tokens`` replaced when given."""
        if max_new_tokens is None:
            return self.generation
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        return replace(self.generation, max_new_tokens=max_new_tokens)

    def answer(
        self,
        images: Tensor | Sequence[Any] | Any,
        questions: str | Sequence[str],
        max_new_tokens: int | None = None,
        location: Tensor | Sequence[tuple[float, float]] | None = None,
    ) -> list[str]:
        """Answer questions about images: no datamodule, the model's own tokenizer and format.

        The prompts are written as the training conversations' (``<image>`` in front of a
        question without one; the data's short-answer instruction is not added: append
        :data:`~zoo.conversation_formats.SHORT_ANSWER_PROMPT` for one-word answers), left-padded,
        and decoded through :meth:`generate_ids` (the KV cache, :attr:`generation`'s settings)
        under ``torch.inference_mode`` on the model's device. The answers equal
        :meth:`predict_step`'s for the same image and question. Call ``model.eval()`` first
        (:func:`zoo.load` returns it so).

        Args:
            images: a ``B×C×H×W`` tensor of normalized images (``torch.stack([transform(im)
                ...])``), or raw images: a PIL image, or a list of PIL images / ``C×H×W``
                arrays, prepared with :attr:`transform`.
            questions: one question for every image, or one per image.
            max_new_tokens: the most tokens of each answer, for this call only (None:
                ``generation.max_new_tokens``).
            location: where each image is, (lat, lon) in degrees (a ``B×2`` tensor or pairs;
                checked here): needed by a model with a location token.

        Returns:
            The best answer to each question.

        Raises:
            ValueError: a number of questions that is neither one nor the number of images, or
                an invalid location.
        """
        with torch.inference_mode():
            image, prompt, mask = self._inference_inputs(images, questions)
            where = None
            if location is not None:
                where = torch.as_tensor(location, dtype=torch.float64)
                validate_locations(where, "location")  # on the host: inference only
                where = where.to(self.device)
            ids = self.generate_ids(
                image, prompt, mask, self._generation_for(max_new_tokens), location=where
            )
            return [a[0] for a in self.decode_answers(ids)]

    # ----------------------------------------------------------------------- training
    def training_step(self, batch: ConversationBatch, batch_idx: int) -> Tensor:
        """The text loss of a batch (logged as ``train_loss``).

        Args:
            batch: a conversation batch.
            batch_idx: its index.

        Returns:
            The loss.
        """
        loss = self(
            batch["image"],
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            location=batch.get("location"),
        ).loss
        self.log("train_loss", loss, batch_size=len(batch["image"]), prog_bar=True)
        return loss

    def _evaluate(self, split: str, batch: ConversationBatch, batch_idx: int) -> None:
        loss = self(
            batch["image"],
            batch["input_ids"],
            batch["attention_mask"],
            batch["labels"],
            location=batch.get("location"),
        ).loss
        self.log(f"{split}_loss", loss, batch_size=len(batch["image"]), sync_dist=True)
        if split == "val" and batch_idx >= self.val_generate_batches:
            return
        answers = self.generate(
            batch["image"],
            batch["prompt_ids"],
            batch["prompt_attention_mask"],
            location=batch.get("location"),
        )
        self.update_generation_metrics(split, batch, answers)

    @staticmethod
    def generation_metrics(question_types: list[str]) -> nn.ModuleDict:
        """Captioning and VQA metrics per evaluation split (families assign ``self.metrics``).

        Args:
            question_types: VQA question types reported separately.

        Returns:
            One :class:`~zoo.metrics.generation.GenerationMetrics` for ``val`` and ``test``.
        """
        return nn.ModuleDict({s: GenerationMetrics(question_types) for s in ("val", "test")})

    def update_generation_metrics(
        self, split: str, batch: ConversationBatch, answers: list[str]
    ) -> None:
        """Score generated answers against the batch's references.

        Args:
            split: ``val`` or ``test``.
            batch: the batch.
            answers: one generated answer per sample.
        """
        if self.metrics is not None:
            self.metrics[split].update(batch, answers)

    def _log_generation_metrics(self, split: str) -> None:
        if self.metrics is None:
            return
        values = self.metrics[split].compute()
        if values:
            self.log_dict({f"{split}_{k}": v for k, v in values.items()})
        self.metrics[split].reset()

    def on_validation_epoch_end(self) -> None:
        """Log and reset the validation metrics."""
        self._log_generation_metrics("val")

    def on_test_epoch_end(self) -> None:
        """Log and reset the test metrics."""
        self._log_generation_metrics("test")

    def validation_step(self, batch: ConversationBatch, batch_idx: int) -> None:
        """Loss, and the generation metrics on the first ``val_generate_batches`` batches.

        Args:
            batch: a conversation batch.
            batch_idx: its index.
        """
        self._evaluate("val", batch, batch_idx)

    def test_step(self, batch: ConversationBatch, batch_idx: int) -> None:
        """Loss and generation metrics.

        Args:
            batch: a conversation batch.
            batch_idx: its index.
        """
        self._evaluate("test", batch, batch_idx)

    def predict_step(self, batch: ConversationBatch, batch_idx: int) -> list[dict[str, Any]]:
        """The answers of a batch.

        Args:
            batch: a conversation batch (prompts).
            batch_idx: its index.

        Returns:
            One row per sample: id, question, answer (and ``answers`` with several return
            sequences), reference; from an image folder also the file ``path``, the chip
            ``window`` and its ``footprint`` (GeoJSON, EPSG:4326, or None).
        """
        ids = self.generate_ids(
            batch["image"],
            batch["prompt_ids"],
            batch["prompt_attention_mask"],
            location=batch.get("location"),
        )
        rows = []
        for i, q, a, r in zip(
            batch["id"],
            batch["question"],
            self.decode_answers(ids),
            batch["reference"],
            strict=True,
        ):
            row = {"id": i, "question": q, "answer": a[0], "reference": r}
            if len(a) > 1:
                row["answers"] = a
            rows.append(row)
        if "path" in batch:
            for row, path, chip, geo in zip(
                rows, batch["path"], batch["chip"], batch["geo"], strict=True
            ):
                row |= {
                    "path": path,
                    "window": chip["window"],
                    "footprint": geo and geo["footprint"],
                }
        return rows
