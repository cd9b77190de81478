"""The generator core that Aquila, FUSE and GeoPix share (Prismatic VLMs / LLaVA anatomy).

A generator = vision backbone + connector (projector, SFI ...) + causal LM. A family's file
builds its vision side and implements :meth:`VisionLanguageGenerator.visual_tokens`; if it
injects visual features inside the LLM (Aquila's MDA, FUSE's recurrent injection) it also
implements :meth:`VisionLanguageGenerator.inject` (visual hidden states in, new ones out; the
core gathers and scatters them, so text positions cannot change) and lists the layers in
``self.inject_layers``.

Conventions:
* the data tokenizes; each sample has one ``<image>`` token, which the model replaces by its
  visual tokens (vectorized splice, any position, left or right padding);
* labels are -100 except on answers (done by the data) and on visual tokens (done here);
* training stages are a :class:`TrainingStage` (what is trained, LoRA by peft) in the config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from zoo.conversation_formats import resolve_conversation, stop_token_ids
from zoo.data.batch import ConversationBatch
from zoo.encoders.llava import LlavaParts, LlavaProjector, load_llava, load_llava_projector
from zoo.encoders.llm import LLMSpec, build_llm, check_vocabulary, decoder_layers, fit_vocabulary
from zoo.encoders.vision import create_vision_model
from zoo.io import load_checkpoint, read_state_dict
from zoo.layers.attention import dense_attention_mask
from zoo.metrics.generation import GenerationMetrics
from zoo.models.base import OptimizerConfig, ZooTask
from zoo.models.decoding import GenerationConfig, repeat_rows
from zoo.models.prediction_writer import PredictionWriter

__all__ = [
    "GenerationConfig",
    "PredictionWriter",
    "TrainingStage",
    "VisionLanguageGenerator",
    "repeat_rows",
    "splice_visual_tokens",
]

#: AdamW defaults of the generators (LLaVA-style betas).
GENERATOR_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), warmup_fraction=0.03
)

LLAMA_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainingStage:
    """What a training stage trains (everything else is frozen).

    Attributes:
        train_vision: the vision encoder.
        train_connector: projectors, SFI/MDA, injection modules (everything but vision and LLM).
        train_llm: the whole LLM (full fine-tuning).
        lora_rank: LoRA rank on the LLM (0: no LoRA); LoRA adapters are always trained.
        lora_alpha: LoRA scaling numerator.
        lora_dropout: dropout on the LoRA input.
        lora_target_modules: names of the LLM's linear layers that get adapters.
        init_checkpoint: a previous stage's checkpoint to start from (weights only).
    """

    train_vision: bool = False
    train_connector: bool = True
    train_llm: bool = False
    lora_rank: int = 0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LORA_TARGETS))
    init_checkpoint: str | None = None


def zoo_added_tokens(tokenizer: PreTrainedTokenizerBase) -> set[str]:
    """The tokens the zoo adds to an LLM's tokenizer: ``<image>`` and GeoPix's ``[SEGs_i]``."""
    return {"<image>"} | {t for t in tokenizer.get_vocab() if re.fullmatch(r"\[SEG\d+_\d+\]", t)}


def splice_visual_tokens(
    embeds: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor | None,
    image_token_id: int,
    visual: Tensor,
    image_first: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor]:
    """Replace each sample's single ``<image>`` token by its ``N`` visual tokens.

    With ``image_first`` the ``<image>`` token is dropped and the visual tokens go before the
    whole text instead (after any left padding, before BOS and the system line), as the FUSE
    authors' ``prepare_inputs_labels_for_multimodal`` places them.

    Returns the new embeddings ``B×(T+N-1)×D``, attention mask, labels (-100 on the visual
    tokens) and the visual positions ``B×N``. One gather, no loop over samples or tokens.

    The count of ``<image>`` tokens is not checked here (that would copy it from the device at
    every step): the conversation collate checks that each sample has exactly one.
    """
    b, t, d = embeds.shape
    n = visual.shape[1]
    is_image = input_ids == image_token_id
    image_at = is_image.float().argmax(dim=1, keepdim=True)  # B×1: the <image> token
    # The visual tokens start at the <image> token, or at the first attended token.
    start = attention_mask.float().argmax(dim=1, keepdim=True) if image_first else image_at
    new = torch.arange(t + n - 1, device=embeds.device).expand(b, -1)
    in_visual = (new >= start) & (new < start + n)
    # The text positions in order with the <image> token left out: q-th of them is q, or q + 1
    # from the <image> token on.
    kept = torch.where(new < start, new, new - n)
    text_index = (kept + (kept >= image_at).long()).clamp(0, t - 1)
    visual_index = (new - start).clamp(0, n - 1)
    out = torch.where(
        in_visual.unsqueeze(-1),
        visual.to(embeds.dtype).gather(1, visual_index.unsqueeze(-1).expand(-1, -1, d)),
        embeds.gather(1, text_index.unsqueeze(-1).expand(-1, -1, d)),
    )
    mask = torch.where(in_visual, 1, attention_mask.gather(1, text_index))
    new_labels = None
    if labels is not None:
        new_labels = torch.where(in_visual, -100, labels.gather(1, text_index))
    positions = start + torch.arange(n, device=embeds.device)
    return out, mask, new_labels, positions


class VisionLanguageGenerator(ZooTask):
    """Base of the zoo's generators; subclasses build the vision side.

    A family's ``__init__`` declares its own arguments and forwards ``**kwargs`` here, so
    these are written once and LightningCLI still validates and documents them for every
    family (jsonargparse resolves ``**kwargs`` through this signature).

    Args:
        vision_pretrained: load the family's ``vision_encoder``'s named weights.
        vision_checkpoint: a local weight file for the vision encoder.
        llm: the LLM, its tokenizer and conversation format (:class:`~zoo.encoders.llm.LLMSpec`;
            a name alone: ``tiny``/``small`` random Llama, ``smollm2``, a Hugging Face id or a
            folder). The zoo CLI gives the data the same spec. A tokenizer that does not belong
            to the LLM is an error (:func:`~zoo.encoders.llm.check_vocabulary`).
        llava: a LLaVA-1.5 checkpoint folder (transformers' or the original repository's
            layout): its CLIP tower, projector (the family's ``projector``), LLM and, through
            the data, tokenizer, chat template and image processor replace ``vision_encoder``,
            ``llm`` and the data's settings; the family's own modules start as configured.
        llava_projector: LLaVA-1.5's projector alone into the family's ``projector`` (a folder
            with ``mm_projector.bin``, a LLaVA checkpoint folder or a weight file); the vision
            encoder, LLM and data stay as configured (the FUSE authors' start).
        stage: what this training stage trains, LoRA, and the checkpoint it starts from.
        generation: decoding settings for validation, test and predict.
        val_generate_batches: validation batches decoded for the generation metrics per epoch.
        activation_checkpointing: recompute the LLM's decoder layers and the vision tower's
            blocks in the backward pass instead of keeping their activations (non-reentrant
            checkpointing of the layers' ``forward``: the injection hooks stay outside it).
        compile: ``torch.compile`` each LLM decoder layer and vision block in place (opt-in;
            the first steps pay the compilation).
        tokenizer: the LLM's tokenizer, built by the data from ``llm`` (linked from the data).
        class_names: scene classes (linked from the data).
        image_size: input size in pixels (linked from the data).
        optimizer: AdamW and its warm-up + cosine schedule.
    """

    #: Visual tokens before the whole text instead of at the ``<image>`` token (a family that
    #: follows its authors there sets it: FUSE's ``image_placement``).
    image_first: bool = False

    def __init__(
        self,
        vision_pretrained: bool = False,
        vision_checkpoint: str | None = None,
        llm: LLMSpec | str = "tiny",
        llava: str | None = None,
        llava_projector: str | None = None,
        stage: TrainingStage | None = None,
        generation: GenerationConfig | None = None,
        val_generate_batches: int = 2,
        activation_checkpointing: bool = False,
        compile: bool = False,
        tokenizer: PreTrainedTokenizerBase | None = None,
        class_names: list[str] | None = None,
        image_size: int = 64,
        optimizer: OptimizerConfig = GENERATOR_OPTIMIZER,
    ) -> None:
        super().__init__(optimizer)
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
        self.vision_pretrained = vision_pretrained
        self.vision_checkpoint = vision_checkpoint
        # Checkpoints store the dataclasses as dicts (see on_save_checkpoint).
        self.stage = TrainingStage(**stage) if isinstance(stage, dict) else stage or TrainingStage()
        self.generation = (
            GenerationConfig(**generation)
            if isinstance(generation, dict)
            else generation or GenerationConfig()
        )
        self.val_generate_batches = val_generate_batches
        self.activation_checkpointing = activation_checkpointing
        self.compile_blocks = compile
        #: The loaded LLaVA checkpoint until :meth:`setup_stage` has taken its parts.
        self._llava: LlavaParts | None = None
        #: LLaVA's projector (with ``llava`` or ``llava_projector``) until setup_stage loads it.
        self._llava_projector: LlavaProjector | None = None
        if llava_projector is not None:
            if llava is not None:
                raise ValueError("llava and llava_projector: give one (llava brings its projector)")
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
        self.inject_layers: list[int] = []
        self.metrics: nn.ModuleDict | None = None
        self._inject_context: dict[str, Any] | None = None
        self._hooks: list[Any] = []

    def create_vision(self, name: str, **timm_kwargs: Any) -> nn.Module:
        """The family's vision encoder ``name`` (a timm model or a transformers CLIP folder)
        with this model's weights; with ``llava``, the checkpoint's CLIP tower."""
        if self._llava is None:
            return create_vision_model(
                name, self.vision_pretrained, self.vision_checkpoint, **timm_kwargs
            )
        if timm_kwargs.get("features_only"):
            raise ValueError(
                f"llava: {type(self).__name__} needs stage maps (features_only) but a LLaVA "
                "checkpoint has a one-scale CLIP ViT; use llava with FUSE or GeoPix"
            )
        rank_zero_info(f"llava: the checkpoint's CLIP tower replaces vision_encoder {name!r}")
        return self._llava.vision

    @property
    def llava_feature_layer(self) -> int | None:
        """The tower block (negative from the end) LLaVA's projector was trained on; None
        without llava / llava_projector."""
        return None if self._llava_projector is None else self._llava_projector.feature_layer

    @property
    def llm_width(self) -> int:
        return self.llm.config.hidden_size

    def image_features(self, image: Tensor) -> Tensor:
        """Pooled features ``B×D`` of the vision tower (frozen-feature evaluation): timm's head
        pooling, or the deepest map averaged for a ``features_only`` tower (Aquila's)."""
        if hasattr(self.vision, "forward_head"):
            return self.vision.forward_head(self.vision.forward_features(image), pre_logits=True)
        return self.vision(image)[-1].mean(dim=(-2, -1))

    # ----------------------------------------------------------------- subclass interface
    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        """``B×N×llm_width`` tokens for the LLM input, and any context for :meth:`inject`."""
        raise NotImplementedError

    def inject(self, layer: int, visual: Tensor, context: Any) -> Tensor:
        """New hidden states ``B×N×D`` for the visual positions before decoder layer ``layer``
        (only for the layers in ``self.inject_layers``); :meth:`inject_at` writes them back."""
        raise NotImplementedError

    def inject_at(self, layer: int, hidden: Tensor, positions: Tensor, context: Any) -> Tensor:
        """Apply :meth:`inject` to the visual positions ``B×N`` of ``hidden``; every other
        position (the text) is returned unchanged."""
        if positions.shape[0] != hidden.shape[0]:  # gather would silently use the first rows
            raise ValueError(
                f"inject_at: {hidden.shape[0]} hidden-state rows but positions for "
                f"{positions.shape[0]} (under beam search, expand them per beam: repeat_rows)"
            )
        index = positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        updated = self.inject(layer, hidden.gather(1, index), context)
        return hidden.scatter(1, index, updated.to(hidden.dtype))

    # ------------------------------------------------------------------------- stages
    def setup_stage(self) -> None:
        """Load the previous stage's weights, freeze per the stage, add LoRA, install hooks.

        Subclasses call this at the end of ``__init__``, once every module exists.
        """
        stage = self.stage
        if self._llava_projector is not None:
            self._llava_projector.load_into(getattr(self, "projector", None), type(self).__name__)
            self._llava = self._llava_projector = None
        if stage.init_checkpoint is not None:
            self.load_stage_checkpoint(stage.init_checkpoint)
        for name, param in self.named_parameters():
            if name.startswith("llm."):
                param.requires_grad = stage.train_llm
            elif name.startswith("vision."):
                param.requires_grad = stage.train_vision
            else:
                param.requires_grad = stage.train_connector
        if stage.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=stage.lora_rank,
                lora_alpha=stage.lora_alpha,
                lora_dropout=stage.lora_dropout,
                target_modules=list(stage.lora_target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            self.llm = get_peft_model(self.llm, config)
            if stage.train_llm:
                for param in self.llm.parameters():
                    param.requires_grad = True
        self._install_hooks()
        self._setup_speed()

    def _vision_blocks(self) -> list[nn.Module]:
        """The vision tower's blocks (a ViT's, each ConvNeXt stage's)."""
        return [
            block
            for name, module in self.vision.named_modules()
            if name.rsplit(".", 1)[-1] == "blocks"
            for block in module
        ]

    def _setup_speed(self) -> None:
        """Activation checkpointing and ``torch.compile`` as configured."""
        if self.activation_checkpointing:
            self.llm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            if not hasattr(self.vision, "set_grad_checkpointing"):
                raise ValueError(
                    f"activation_checkpointing: the vision tower {type(self.vision).__name__} has "
                    "no set_grad_checkpointing (timm models do)"
                )
            self.vision.set_grad_checkpointing(True)
        if self.compile_blocks:
            for block in [*decoder_layers(self.llm), *self._vision_blocks()]:
                block.compile()

    def load_stage_checkpoint(self, path: str) -> None:
        """Weights of a previous stage (a Lightning checkpoint or a safetensors file).

        LoRA adapters of that stage are merged into the LLM's weights first (W + s·B·A with
        s = alpha / r from its hyper-parameters), so a new stage can add its own adapters.
        """
        file = Path(path)
        scaling = 1.0
        if file.suffix == ".safetensors":
            state = read_state_dict(file, "stage.init_checkpoint")
        else:
            checkpoint = load_checkpoint(file, "stage.init_checkpoint")
            state = checkpoint["state_dict"]
            previous = checkpoint.get("hyper_parameters", {}).get("stage") or {}
            if previous.get("lora_rank"):
                scaling = previous["lora_alpha"] / previous["lora_rank"]
        state = {_unpeft(k): v for k, v in merge_lora_state(state, scaling).items()}
        missing, unexpected = self.load_state_dict(self.stage_state(state), strict=False)
        rank_zero_info(
            f"loaded {len(state) - len(unexpected)} tensors from {file}"
            + (f"; {len(missing)} not in it (e.g. {missing[0]})" if missing else "")
        )
        if unexpected:
            raise ValueError(
                f"{file} holds weights this model does not have (e.g. {unexpected[0]}): is it a "
                "checkpoint of the same model family and size?"
            )

    def _install_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        layers = decoder_layers(self.llm)
        self._hooks = []
        for index in self.inject_layers:
            if not 0 <= index < len(layers):
                raise ValueError(
                    f"injection layer {index} is outside the LLM's {len(layers)} layers"
                )
            self._hooks.append(
                layers[index].register_forward_pre_hook(self._make_hook(index), with_kwargs=True)
            )

    def _make_hook(self, index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            context = self._inject_context
            if context is None:
                return None
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            if hidden.shape[1] < context["length"]:  # a decoding step: no visual tokens
                return None
            context = self._context_for_rows(context, hidden.shape[0])
            hidden = self.inject_at(index, hidden, context["positions"], context["context"])
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = hidden
            else:
                args = (hidden, *args[1:])
            return args, kwargs

        return hook

    def _context_for_rows(self, context: dict[str, Any], rows: int) -> dict[str, Any]:
        """The injection context for ``rows`` hidden-state rows: ``generate`` runs each prompt as
        ``num_beams`` (or ``num_return_sequences``) adjacent rows, so positions and context are
        repeated per row, once per call (shapes only: nothing is read from the device)."""
        samples = context["positions"].shape[0]
        if rows == samples:
            return context
        if rows % samples:
            raise ValueError(
                f"the LLM runs {rows} rows but the injection context holds {samples} samples: "
                "rows must be a whole number of copies of each sample (beams, return sequences)"
            )
        repeats = rows // samples
        context = {
            **context,
            "positions": context["positions"].repeat_interleave(repeats, dim=0),
            "context": repeat_rows(context["context"], repeats),
        }
        self._inject_context = context
        return context

    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy`` (FSDP2; the zoo's
        :class:`~zoo.strategies.GeneratorFSDPStrategy`) shard the model per decoder layer and
        vision block (:func:`~zoo.strategies.fully_shard_generator`); else nothing."""
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

    def merge_lora(self) -> None:
        """Fold the LoRA adapters into the LLM's weights (a plain model afterwards)."""
        if hasattr(self.llm, "merge_and_unload"):
            self.llm = self.llm.merge_and_unload()
            self._install_hooks()

    # ------------------------------------------------------------------------ forward
    def _inputs(
        self, image: Tensor, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        visual, context = self.visual_tokens(image)
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
        self._inject_context = (
            {
                "positions": positions,
                "context": context,
                "length": embeds.shape[1],
            }
            if self.inject_layers
            else None
        )
        return embeds, mask, labels

    def teacher_forced(
        self, embeds: Tensor, attention_mask: Tensor, labels: Tensor | None, **kwargs: Any
    ) -> Any:
        """The LLM over whole sequences (training, evaluation losses): no KV cache, and the
        4-D attention mask built here, so no step copies a value from the device to the host."""
        mask = dense_attention_mask(
            attention_mask, self.llm.config._attn_implementation, causal=True, dtype=embeds.dtype
        )
        return self.llm(
            inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False, **kwargs
        )

    def forward(
        self, image: Tensor, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None
    ) -> Any:
        """Teacher-forced pass; returns the Hugging Face output (``loss`` when labels given)."""
        embeds, mask, labels = self._inputs(image, input_ids, attention_mask, labels)
        try:
            return self.teacher_forced(embeds, mask, labels)
        finally:
            self._inject_context = None

    @torch.no_grad()
    def generate_ids(
        self, image: Tensor, prompt_ids: Tensor, prompt_attention_mask: Tensor
    ) -> Tensor:
        """Token ids ``(B·R)×T`` of the answers to left-padded prompts (``R`` =
        ``num_return_sequences``, each prompt's answers adjacent, best first), decoded with the
        KV cache by Hugging Face's ``generate`` per :attr:`generation`: the one decoding path of
        every family. The injection hooks see the prompts' rows expanded per beam."""
        embeds, mask, _ = self._inputs(image, prompt_ids, prompt_attention_mask, None)
        try:
            return self.llm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                **self.generation.generate_kwargs(),
                eos_token_id=self.stop_token_ids,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        finally:
            self._inject_context = None

    def decode_answers(self, ids: Tensor) -> list[list[str]]:
        """Texts of :meth:`generate_ids`' output, one list of ``R`` answers per prompt."""
        texts = [s.strip() for s in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
        r = self.generation.num_return_sequences
        return [texts[i : i + r] for i in range(0, len(texts), r)]

    def generate(
        self, image: Tensor, prompt_ids: Tensor, prompt_attention_mask: Tensor
    ) -> list[str]:
        """The best answer to each left-padded prompt (see :meth:`generate_ids`)."""
        return [
            a[0]
            for a in self.decode_answers(
                self.generate_ids(image, prompt_ids, prompt_attention_mask)
            )
        ]

    # ----------------------------------------------------------------------- training
    def training_step(self, batch: ConversationBatch, batch_idx: int) -> Tensor:
        loss = self(
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"]
        ).loss
        self.log("train_loss", loss, batch_size=len(batch["image"]), prog_bar=True)
        return loss

    def _evaluate(self, split: str, batch: ConversationBatch, batch_idx: int) -> None:
        loss = self(
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"]
        ).loss
        self.log(f"{split}_loss", loss, batch_size=len(batch["image"]), sync_dist=True)
        if split == "val" and batch_idx >= self.val_generate_batches:
            return
        answers = self.generate(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"])
        self.update_generation_metrics(split, batch, answers)

    @staticmethod
    def generation_metrics(question_types: list[str]) -> nn.ModuleDict:
        """Captioning and VQA metrics per evaluation split (families assign ``self.metrics``)."""
        return nn.ModuleDict({s: GenerationMetrics(question_types) for s in ("val", "test")})

    def update_generation_metrics(
        self, split: str, batch: ConversationBatch, answers: list[str]
    ) -> None:
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
        self._log_generation_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_generation_metrics("test")

    def validation_step(self, batch: ConversationBatch, batch_idx: int) -> None:
        self._evaluate("val", batch, batch_idx)

    def test_step(self, batch: ConversationBatch, batch_idx: int) -> None:
        self._evaluate("test", batch, batch_idx)

    def predict_step(self, batch: ConversationBatch, batch_idx: int) -> list[dict[str, Any]]:
        """One row per sample: id, question, answer (and ``answers`` with several return
        sequences), reference; from an image folder also the file ``path``, the chip ``window``
        and its ``footprint`` (GeoJSON, EPSG:4326, or None)."""
        ids = self.generate_ids(batch["image"], batch["prompt_ids"], batch["prompt_attention_mask"])
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


def merge_lora_state(state: dict[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """Fold peft LoRA pairs of a state dict into their base weights: W + scaling · B @ A."""
    out = {k: v for k, v in state.items() if ".lora_" not in k}
    for key, a in state.items():
        if ".lora_A." not in key:
            continue
        prefix, adapter = key.split(".lora_A.")
        b = state[f"{prefix}.lora_B.{adapter}"]
        base = f"{prefix}.base_layer.weight"
        out[base] = out[base] + scaling * (b.float() @ a.float()).to(out[base].dtype)
    return out


def _unpeft(key: str) -> str:
    """A peft-wrapped LLM's parameter name as the plain model's."""
    return key.replace("llm.base_model.model.", "llm.").replace(".base_layer.", ".")
