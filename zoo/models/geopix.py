"""GeoPix: a generator that answers with masks (LISA / PixelLM lineage, remote sensing).

* Vision: a ViT whose tokens at several depths are the scales (the paper: CLIP ViT-L at
  336 px, two depths); an independent projector per scale into the mask-decoder width
  (``decoder.shared_projector`` for the paper's ablation), and the deepest scale through the
  multimodal projector into the LLM.
* Segmentation tokens: N per scale (``[SEG{s}_{i}]``, added to the tokenizer by the data and to
  the embedding table here); a target's phrase is its S·N tokens. Their rows of the input
  embeddings and of ``lm_head`` train in every stage (LISA trains both tables; under LoRA or a
  frozen LLM only those rows move, the others get no gradient and no weight decay).
* Conditioning: the last-layer hidden state at the position that *predicts* each segmentation
  token (LISA's and PixelLM's reading, ``seg_tokens.hidden: predicting``; ``"token"``, the hidden state
  at the token itself, was this model's choice before), through an MLP, conditions the mask
  decoder: one target per phrase, several targets per answer.
* Mask decoder (:class:`~zoo.layers.mask_decoder.MultiScaleMaskDecoder`): per scale, coarse to
  fine, self-attended projected features, SAM-style two-way attention, masks upscaled to 4× the
  token grid (96×96 for CLIP ViT-L/14 at 336 px, then resized to the image), and the class-wise
  learnable memory (:class:`~zoo.layers.memory.ClassWiseMemory`, Eqs. 1-3) giving the
  memory-enhanced features from which the final masks are predicted again.
* Loss: text cross-entropy + 2.0 · BCE + 0.5 · Dice (LISA's weights), averaged over targets.

Masks are evaluated teacher-forced (the reference answer's segmentation tokens condition the
decoder, as in LISA's evaluation). The memory's class is the one the text names (the first class
name in the target's referring expression): ``mIoU``/``cIoU``; with a memory the ground-truth class
is reported beside it as an oracle (``oracle_mIoU``/``oracle_cIoU``), never used silently.
With ``mask_original`` in the batch (the data's ``original_resolution``) the IoU is computed at
each image's original resolution. Image-level conversations (no ``mask``: VRSBench captions,
VQA, grounding) are scored by the generator's metrics (``text_metrics``). ``predict`` generates the answer, then decodes one mask per
generated segmentation phrase, with the category read from the words before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from zoo.data.batch import ReferringBatch
from zoo.encoders.llm import LLMSpec
from zoo.encoders.vision import VisionSpec
from zoo.layers.mask_decoder import MultiScaleMaskDecoder
from zoo.layers.memory import ClassWiseMemory, Fusion
from zoo.layers.projector import MapProjector, mlp_projector
from zoo.losses.segmentation import mask_losses
from zoo.metrics.segmentation import ReferringIoU
from zoo.models.base import OptimizerConfig, as_group
from zoo.models.decoding import GenerationConfig
from zoo.models.generator import (
    DEFAULT_SPEED,
    SpeedConfig,
    VisionLanguageGenerator,
    splice_visual_tokens,
)
from zoo.models.location_token import LocationToken
from zoo.models.stages import TrainingStage

#: AdamW and schedule of the paper's recipe (the configs set each stage's own).
GEOPIX_OPTIMIZER = OptimizerConfig(
    lr=3e-4, weight_decay=0.0, betas=(0.9, 0.95), warmup_fraction=0.03
)

__all__ = [
    "GeoPix",
    "MaskDecoderConfig",
    "MaskLossWeights",
    "MemoryConfig",
    "SegTokens",
    "Segmentation",
]


@dataclass(frozen=True)
class Segmentation:
    """GeoPix's answer to one image and question, with a mask per segmentation phrase.

    Attributes:
        answer: the generated text (segmentation tokens left out).
        masks: ``K×H×W`` booleans, one per complete phrase of the answer (logits > 0), at the
            given raw image's own size (the model's input size for a normalized tensor).
        phrases: each mask's referring words from the answer ("the ship").
        categories: the memory class each phrase names (None: it names none; the memory then
            reads class 0).
        logits: ``K×H×W`` float mask logits the masks threshold (GeoPix has no mask-score
            head; ``logits.sigmoid()`` gives per-pixel probabilities).
    """

    answer: str
    masks: Tensor
    phrases: list[str]
    categories: list[str | None]
    logits: Tensor


@dataclass(frozen=True)
class MaskDecoderConfig:
    """GeoPix's mask decoder and the projectors into its width (``decoder:`` in a config).

    Attributes:
        dim: width of the mask decoder.
        depth: two-way blocks per scale.
        heads: attention heads of the mask decoder (and of the memory's attention fusions).
        upscale_stages: transposed-convolution stages (2× each) from the token grid to the
            masks' native resolution (2: 4×, SAM / LISA; 0: the token grid).
        token_pooling: ``learned`` weights over a scale's N segmentation tokens (PixelLM) or
            their ``mean`` (the previous choice).
        coarse_to_fine: each scale's features are modulated by the coarser scale's mask.
        shared_projector: one projector for all scales instead of one each (ablation).
    """

    dim: int = 64
    depth: int = 2
    heads: int = 4
    upscale_stages: int = 2
    token_pooling: Literal["learned", "mean"] = "learned"
    coarse_to_fine: bool = True
    shared_projector: bool = False


@dataclass(frozen=True)
class MemoryConfig:
    """GeoPix's class-wise learnable memory, CLM (``memory:`` in a config).

    Attributes:
        enabled: refine the masks with the memory.
        capacity: memory entries per class and scale (the paper: 64).
        dim: width of the memory bank, independent of ``decoder.dim`` (64: the width at which
            Table IX's Attention and Dual Attention counts come out).
        fusion: how the entries are fused (Table IX): ``conv3d`` (the paper's choice),
            ``conv2d``, ``argmax``, ``attention``, ``dual_attention``.
    """

    enabled: bool = True
    capacity: int = 64
    dim: int = 64
    fusion: Fusion = "conv3d"


@dataclass(frozen=True)
class SegTokens:
    """GeoPix's segmentation tokens (``seg_tokens:`` in a config).

    Attributes:
        per_scale: N segmentation tokens per scale (``[SEG{s}_{i}]``).
        hidden: where the conditioning hidden state is read: ``predicting`` (the position that
            predicts each segmentation token, LISA / PixelLM) or ``token`` (at the token).
    """

    per_scale: int = 3
    hidden: Literal["predicting", "token"] = "predicting"


@dataclass(frozen=True)
class MaskLossWeights:
    """Weights of GeoPix's mask losses beside the text loss (``loss_weights:`` in a config).

    Attributes:
        bce: weight of the mask BCE loss.
        dice: weight of the mask Dice loss.
    """

    bce: float = 2.0
    dice: float = 0.5


#: The default image encoder: the zoo's offline ViT (the paper: CLIP ViT-L/14 at 336 px).
ZOO_VIT = VisionSpec(name="zoo_vit_tiny")


class GeoPix(VisionLanguageGenerator):
    """GeoPix over a swappable ViT and LLM.

    Args:
        vision: the image encoder: a timm ViT (``vit_large_patch14_clip_336.openai`` in the
            paper), a local folder or (with ``llava``) LLaVA's tower.
        feature_layers: ViT blocks giving the scales (deepest last; it also feeds the LLM).
        decoder: the mask decoder (:class:`MaskDecoderConfig`).
        memory: the class-wise memory (:class:`MemoryConfig`).
        seg_tokens: the segmentation tokens (:class:`SegTokens`).
        loss_weights: the mask losses' weights (:class:`MaskLossWeights`).
        llm: the LLM (see :class:`~zoo.models.generator.VisionLanguageGenerator`).
        llava: a LLaVA-1.5 checkpoint folder: its tower, projector and LLM (the paper's start).
        llava_projector: LLaVA-1.5's projector alone into ``projector``.
        stage: what this training stage trains, LoRA, and the checkpoint it starts from.
        generation: decoding settings for predict and image-level conversations.
        val_generate_batches: validation batches decoded for the generation metrics.
        speed: activation checkpointing and ``torch.compile``.
        tokenizer: the LLM's tokenizer, with the segmentation tokens (linked from the data).
        class_names: the object categories of the memory (linked from the data).
        image_size: input size in pixels (linked from the data).
        in_channels: the bands of an image (linked from the data's ``num_channels``).
        optimizer: AdamW and its schedule (defaults: the paper's recipe).
        location: a location token after the visual tokens (None: none; see
            :class:`~zoo.models.location_token.LocationToken`).

    Raises:
        ValueError: no ``class_names``, a tokenizer without the segmentation tokens, or an
            unknown ``seg_tokens.hidden``.
    """

    #: The [SEG] rows of ``lm_head`` train without weight decay too (AdamW's decay would shrink
    #: the frozen rows of the same matrix); ``embed_tokens`` is exempt already (``token``).
    no_decay_keys = (*VisionLanguageGenerator.no_decay_keys, "lm_head")

    def __init__(
        self,
        vision: VisionSpec = ZOO_VIT,
        feature_layers: list[int] = [1, 3],  # noqa: B006
        decoder: MaskDecoderConfig = MaskDecoderConfig(),
        memory: MemoryConfig = MemoryConfig(),
        seg_tokens: SegTokens = SegTokens(),
        loss_weights: MaskLossWeights = MaskLossWeights(),
        llm: LLMSpec | str = "tiny",
        llava: str | None = None,
        llava_projector: str | None = None,
        stage: TrainingStage | None = None,
        generation: GenerationConfig | None = None,
        val_generate_batches: int = 0,
        speed: SpeedConfig = DEFAULT_SPEED,
        tokenizer: PreTrainedTokenizerBase | None = None,
        class_names: list[str] | None = None,
        image_size: int = 64,
        in_channels: int = 3,
        optimizer: OptimizerConfig = GEOPIX_OPTIMIZER,
        location: LocationToken | None = None,
    ) -> None:
        self.decoder_config = as_group(MaskDecoderConfig, decoder, "decoder")
        self.memory_config = as_group(MemoryConfig, memory, "memory")
        self.seg_config = as_group(SegTokens, seg_tokens, "seg_tokens")
        self.loss_weights = as_group(MaskLossWeights, loss_weights, "loss_weights")
        if self.seg_config.hidden not in ("predicting", "token"):
            raise ValueError(
                f"seg_tokens.hidden must be 'predicting' or 'token', got {self.seg_config.hidden!r}"
            )
        self.scales = len(feature_layers)
        self.requested_layers = list(feature_layers)
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
        """The ViT, the scale and multimodal projectors, the mask decoder with its memory.

        Raises:
            ValueError: no class names, or a tokenizer without the segmentation tokens.
        """
        image_size, scales = self.image_size, self.scales
        dec, mem, per_scale = self.decoder_config, self.memory_config, self.seg_config.per_scale
        if not self.class_names:
            raise ValueError("GeoPix needs class_names: the object categories of the memory")
        self.seg_token_ids = self._seg_token_ids(self.tokenizer, scales, per_scale)
        self.vision = self.create_vision(num_classes=0, img_size=image_size)
        depth = len(self.vision.blocks)
        self.feature_layers = [layer % depth for layer in self.requested_layers]
        vision_width = self.vision.embed_dim
        self.grid_size = image_size // self.vision.patch_embed.patch_size[0]
        self.scale_projectors = nn.ModuleList(
            [MapProjector(vision_width, dec.dim)] * scales
            if dec.shared_projector
            else [MapProjector(vision_width, dec.dim) for _ in range(scales)]
        )
        self.projector = mlp_projector(vision_width, self.llm_width)
        self.seg_projector = mlp_projector(self.llm_width, dec.dim)
        memory = (
            ClassWiseMemory(
                len(self.class_names),
                scales,
                dec.dim,
                self.grid_size,
                mem.capacity,
                mem.fusion,
                dec.heads,
                memory_dim=mem.dim,
                mask_stride=2**dec.upscale_stages,
            )
            if mem.enabled
            else None
        )
        self.decoder = MultiScaleMaskDecoder(
            dec.dim,
            scales,
            dec.depth,
            dec.heads,
            mask_size=image_size,
            memory=memory,
            upscale_stages=dec.upscale_stages,
            tokens_per_scale=per_scale,
            token_pooling=dec.token_pooling,
            coarse_to_fine=dec.coarse_to_fine,
        )
        self.register_load_state_dict_pre_hook(_memory_under_decoder)
        self.tokens_per_target = scales * per_scale
        splits = ("val", "test", "oracle_val", "oracle_test")
        self.metrics = nn.ModuleDict({s: ReferringIoU() for s in splits})
        #: captioning / VQA / grounding of image-level conversations (VRSBench), generated
        self.text_metrics = self.generation_metrics([])

    def parameter_groups_for_stage(self) -> dict[str, list[nn.Module]]:
        """``vision``: the ViT; ``connector``: the projectors and the mask decoder (its memory
        included); ``llm``: the LLM.

        Returns:
            The groups the training stage freezes or trains.
        """
        return {
            "vision": [self.vision],
            "connector": [
                self.scale_projectors,
                self.projector,
                self.seg_projector,
                self.decoder,
            ],
            "llm": [self.llm],
        }

    def llava_projector_target(self) -> nn.Module:
        """The multimodal projector from the deepest scale into the LLM (LLaVA-1.5's).

        Returns:
            ``self.projector``.
        """
        return self.projector

    def trained_token_ids(self) -> Tensor:
        """The segmentation tokens: their embedding and ``lm_head`` rows train in every stage
        (LISA trains both tables; under LoRA or a frozen LLM only those rows move, the others get
        no gradient and no weight decay: :attr:`no_decay_keys`).

        Returns:
            Their ids.
        """
        return self.seg_token_ids

    @staticmethod
    def _seg_token_ids(tokenizer: PreTrainedTokenizerBase, scales: int, per_scale: int) -> Tensor:
        names = [f"[SEG{s}_{i}]" for s in range(scales) for i in range(per_scale)]
        ids = tokenizer.convert_tokens_to_ids(names)
        if any(i is None or i == tokenizer.unk_token_id for i in ids):
            raise ValueError(
                f"the tokenizer lacks the segmentation tokens {names}: use a referring-"
                "segmentation datamodule, which adds them"
            )
        return torch.tensor(ids)

    # ------------------------------------------------------------------------- vision
    def _features(self, image: Tensor) -> list[Tensor]:
        return self.vision.forward_intermediates(
            image, indices=self.feature_layers, output_fmt="NCHW", intermediates_only=True
        )

    def visual_tokens(self, image: Tensor) -> tuple[Tensor, Any]:
        """The deepest scale through the multimodal projector, and every scale's map.

        Args:
            image: normalized images ``B×C×H×W``.

        Returns:
            The tokens ``B×N×llm_width`` and the ViT's maps at ``feature_layers``.
        """
        maps = self._features(image)
        tokens = self.projector(maps[-1].flatten(2).transpose(1, 2))
        return tokens, maps

    def scale_features(self, maps: list[Tensor]) -> list[Tensor]:
        """Per-scale maps projected to the decoder width.

        Args:
            maps: the ViT's maps at ``feature_layers``.

        Returns:
            One ``B×D×h×w`` map per scale.
        """
        return [p(m) for p, m in zip(self.scale_projectors, maps, strict=True)]

    # --------------------------------------------------------------------------- masks
    def _seg_positions(self, input_ids: Tensor) -> Tensor:
        """-100 everywhere except segmentation tokens (their index in the target phrase)."""
        ids = self.seg_token_ids.to(input_ids.device)
        match = input_ids.unsqueeze(-1) == ids
        return torch.where(match.any(-1), match.float().argmax(-1), -100)

    def forward_with_masks(
        self,
        batch: ReferringBatch,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None,
        category: Tensor | None,
    ) -> tuple[Any, Tensor, Tensor]:
        """Teacher-forced pass with masks.

        Where the phrases are comes from the collate (``target_index``, ``target_positions``):
        the number of targets is then a shape, and nothing is copied from the device to the
        host. Other ids (the generated answers of :meth:`predict_step`) have their phrases found
        here, which synchronizes.

        Args:
            batch: the batch (``image``, and where the phrases are).
            input_ids: token ids ``B×L``.
            attention_mask: ``B×L``.
            labels: ``B×L`` targets, or None.
            category: each target's memory class ``(T,)``, or None.

        Returns:
            The LLM output, mask logits ``T×H×W`` and each target's image index ``(T,)``.
        """
        out, cond, features, target_image = self.conditions(
            batch, input_ids, attention_mask, labels
        )
        return out, self.decode_masks(cond, features, target_image, category), target_image

    def conditions(
        self,
        batch: ReferringBatch,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor | None,
    ) -> tuple[Any, Tensor, list[Tensor], Tensor]:
        """The LLM pass and the segmentation tokens' conditioning.

        Args:
            batch: the batch (``image``, and where the phrases are).
            input_ids: token ids ``B×L``.
            attention_mask: ``B×L``.
            labels: ``B×L`` targets, or None.

        Returns:
            The LLM output, the conditioning ``T×S×N×D``, the projected scales and each
            target's image index ``(T,)``.
        """
        image = batch["image"]
        visual, maps = self.visual_tokens(image)
        visual = self.add_location_token(visual, batch.get("location"))  # N + 1 with one
        embeds = self.llm.get_input_embeddings()(input_ids)
        embeds, mask, labels, visual_positions = splice_visual_tokens(
            embeds, input_ids, attention_mask, labels, self.image_token_id, visual
        )
        out = self.teacher_forced(embeds, mask, labels, output_hidden_states=True)
        target_image, positions = self._phrases(batch, input_ids)
        if self.seg_config.hidden == "predicting":  # the position whose output is the token
            positions = positions - 1
        # Tokens after <image> moved by the N - 1 visual tokens that replaced it.
        start = visual_positions[:, 0].index_select(0, target_image)[:, None]
        positions = positions + (visual.shape[1] - 1) * (positions > start)
        flat = (target_image[:, None] * embeds.shape[1] + positions).flatten()
        hidden = out.hidden_states[-1].flatten(0, 1).index_select(0, flat)  # phrase order
        scales = len(self.feature_layers)
        cond = self.seg_projector(hidden.float()).view(
            len(target_image), scales, self.seg_config.per_scale, self.decoder_config.dim
        )
        return out, cond, self.scale_features(maps), target_image

    def decode_masks(
        self, cond: Tensor, features: list[Tensor], target_image: Tensor, category: Tensor | None
    ) -> Tensor:
        """Mask logits of the targets, the memory read at ``category``.

        Args:
            cond: the conditioning ``T×S×N×D``.
            features: the projected scales.
            target_image: each target's image index ``(T,)``.
            category: each target's memory class ``(T,)``, or None (class 0).

        Returns:
            Mask logits ``T×H×W``.

        Raises:
            ValueError: as many categories as targets are needed.
        """
        if category is None:
            category = torch.zeros(len(target_image), dtype=torch.long, device=cond.device)
        elif len(category) != len(target_image):
            raise ValueError(
                f"the answers hold {len(target_image)} segmentation phrases but the batch has "
                f"{len(category)} target masks: each target needs one phrase"
            )
        return self.decoder(features, cond, target_image, category).logits

    @property
    def memory(self) -> ClassWiseMemory | None:
        """The class-wise memory (built here, given to and registered by the decoder)."""
        return self.decoder.memory

    def _phrases(self, batch: ReferringBatch, input_ids: Tensor) -> tuple[Tensor, Tensor]:
        """Each target's image ``(T,)`` and the positions ``T×S·N`` of its phrase's tokens."""
        if "target_positions" in batch and input_ids is batch["input_ids"]:
            positions = batch["target_positions"]
            target_image = batch["target_index"] // batch["mask"].shape[1]
        else:  # found on the device: copies the counts to the host
            seg = self._seg_positions(input_ids) >= 0
            counts = seg.sum(1)
            if (counts % self.tokens_per_target).any():
                raise ValueError(
                    f"found {counts.tolist()} segmentation tokens per sample, not multiples of "
                    f"the {self.tokens_per_target} of a target phrase (was a sequence truncated?)"
                )
            rows, cols = seg.nonzero(as_tuple=True)  # row-major: targets in answer order
            positions = cols.view(-1, self.tokens_per_target)
            target_image = rows.view(-1, self.tokens_per_target)[:, 0]
        if positions.shape[1] != self.tokens_per_target:
            raise ValueError(
                f"the batch's phrases have {positions.shape[1]} segmentation tokens, the model's "
                f"{self.tokens_per_target} (its feature_layers x seg_tokens.per_scale)"
            )
        return target_image, positions

    def _targets(self, batch: ReferringBatch) -> tuple[Tensor, Tensor]:
        """The masks ``T×H×W`` and categories ``(T,)`` of the real targets, in phrase order."""
        index = batch.get("target_index")
        if index is None:  # a batch not laid out by the collate: found on the device (syncs)
            index = batch["mask_valid"].flatten().nonzero().squeeze(1)
        return batch["mask"].flatten(0, 1)[index].float(), batch["category"].flatten()[index]

    def training_step(self, batch: ReferringBatch, batch_idx: int) -> Tensor:
        """Text cross-entropy + weighted mask BCE and Dice (each logged).

        Args:
            batch: a referring batch.
            batch_idx: its index.

        Returns:
            The loss.
        """
        targets, category = self._targets(batch)
        out, masks, _ = self.forward_with_masks(
            batch, batch["input_ids"], batch["attention_mask"], batch["labels"], category
        )
        self._check_targets(masks, targets)
        weights = self.loss_weights
        losses = mask_losses(masks, targets, weights.bce, weights.dice)
        loss = out.loss + losses["loss"]
        b = len(batch["image"])
        self.log_dict(
            {"train_text_loss": out.loss, "train_bce": losses["bce"], "train_dice": losses["dice"]},
            batch_size=b,
        )
        self.log("train_loss", loss, batch_size=b, prog_bar=True)
        return loss

    @staticmethod
    def _check_targets(masks: Tensor, targets: Tensor) -> None:
        if len(masks) != len(targets):
            raise ValueError(
                f"the answers hold {len(masks)} segmentation phrases but the batch has "
                f"{len(targets)} target masks: each target needs one phrase"
            )

    def _evaluate(self, split: str, batch: ReferringBatch, batch_idx: int) -> None:
        if "mask" not in batch:  # an image-level conversation (captions, VQA, grounding)
            super()._evaluate(split, batch, batch_idx)
            return
        targets, category = self._targets(batch)
        out, cond, features, target_image = self.conditions(
            batch, batch["input_ids"], batch["attention_mask"], batch["labels"]
        )
        text_category = self.categories_from_sentences(batch).to(category.device)
        masks = self.decode_masks(cond, features, target_image, text_category)
        self._check_targets(masks, targets)
        b = len(batch["image"])
        self.log(f"{split}_loss", out.loss, batch_size=b, sync_dist=True)
        self._update_iou(self.metrics[split], batch, masks, targets)
        if self.memory is not None:  # the oracle: the ground-truth class reads the memory
            oracle = self.decode_masks(cond, features, target_image, category)
            self._update_iou(self.metrics[f"oracle_{split}"], batch, oracle, targets)

    @staticmethod
    def _update_iou(
        metric: ReferringIoU, batch: ReferringBatch, masks: Tensor, targets: Tensor
    ) -> None:
        """IoU at the model's resolution, or at each image's original one (``mask_original``:
        a ``K_i×H_i×W_i`` tensor per image, its targets in phrase order)."""
        originals = batch.get("mask_original")
        if originals is None:
            metric.update(masks > 0, targets > 0.5)
            return
        start = 0
        for original in originals:  # images of different sizes: one update each
            k = len(original)
            if k:
                logits = nn.functional.interpolate(
                    masks[start : start + k, None].float(),
                    size=original.shape[-2:],
                    mode="bilinear",
                    align_corners=False,
                )[:, 0]
                metric.update(logits > 0, original > 0)
            start += k
        if start != len(masks):
            raise ValueError(
                f"mask_original holds {start} targets, the batch {len(masks)}: each target "
                "needs its original mask"
            )

    def update_generation_metrics(self, split: str, batch: Any, answers: list[str]) -> None:
        """Score the answers of image-level conversations (captions, VQA, grounding).

        Args:
            split: ``val`` or ``test``.
            batch: the batch.
            answers: one generated answer per sample.
        """
        self.text_metrics[split].update(batch, answers)

    def _log_generation_metrics(self, split: str) -> None:
        values = self.text_metrics[split].compute()
        if values:
            self.log_dict({f"{split}_{k}": v for k, v in values.items()})
        self.text_metrics[split].reset()
        for key in (split, f"oracle_{split}"):
            metric = self.metrics[key]
            if metric.update_count:
                prefix = "oracle_" if key.startswith("oracle_") else ""
                self.log_dict({f"{split}_{prefix}{k}": v for k, v in metric.compute().items()})
            metric.reset()

    def categories_from_sentences(self, batch: ReferringBatch) -> Tensor:
        """The memory class each target's referring expression names (host side, phrase order).

        Args:
            batch: a referring batch with ``sentences``.

        Returns:
            The first class name in each sentence, 0 when it names none, ``(T,)``.

        Raises:
            ValueError: the batch has no sentences.
        """
        if "sentences" not in batch:
            raise ValueError(
                "the batch has no 'sentences' (each target's referring expression): the memory's "
                "class is read from the text; use a referring-segmentation datamodule"
            )
        return torch.tensor(
            [self._first_class(s) for sentences in batch["sentences"] for s in sentences],
            dtype=torch.long,
        )

    def _first_class(self, text: str) -> int:
        found = self._class_in(text)
        return 0 if found is None else found

    def _class_in(self, text: str) -> int | None:
        """The class whose name ``text`` writes first, None if it names none."""
        text = text.lower()
        hits = [(text.find(name), c) for c, name in enumerate(self.class_names) if name in text]
        return min(hits)[1] if hits else None

    # ---------------------------------------------------------------------- inference
    @torch.no_grad()
    def decode_segmentations(
        self,
        image: Tensor,
        prompt: Tensor,
        prompt_mask: Tensor,
        generation: GenerationConfig | None = None,
        location: Tensor | None = None,
    ) -> list[tuple[str, Tensor, list[str], list[int | None]]]:
        """Generate each answer, then decode one mask per generated segmentation phrase.

        The shared decoding path (:meth:`generate_ids`; the best answer of each prompt), then a
        teacher-forced pass over prompt + answer up to its last complete phrase, the memory read
        at the class each phrase's words name. What :meth:`predict_step` and :meth:`segment`
        both return.

        Args:
            image: normalized images ``B×C×H×W``.
            prompt: left-padded prompts ``B×T``.
            prompt_mask: ``B×T``.
            generation: decoding settings for this call (None: :attr:`generation`).
            location: float ``B×2`` (lat, lon) in degrees (a model with a location token).

        Returns:
            Per image: the answer, the mask logits ``K×H×W`` at the model's input size (on the
            model's device), each phrase's words and the class index each names (None: none).
        """
        generated = self.generate_ids(image, prompt, prompt_mask, generation, location=location)
        generated = generated[:: self.generation.num_return_sequences]
        out = []
        for i in range(len(prompt)):
            answer_ids = generated[i][generated[i] != self.tokenizer.pad_token_id]
            ids = torch.cat([prompt[i][prompt_mask[i] > 0], answer_ids])[None]
            seg = self._seg_positions(ids)
            complete = int((seg >= 0).sum()) // self.tokens_per_target
            logits = image.new_zeros(0, *image.shape[-2:])
            phrases: list[str] = []
            named: list[int | None] = []  # the class each phrase of the answer names
            if complete:
                keep = self._complete_phrases(seg[0], complete)
                ids = ids[:, : keep + 1]
                # Each target's words come from the answer alone: the question names what was
                # asked for, the answer what each mask is ("the road", not the question's tree).
                texts = self.target_texts(ids[0, int(prompt_mask[i].sum()) :], complete)
                phrases = [_phrase(t) for t in texts]
                named = [self._class_in(t) for t in texts]
                category = torch.tensor(
                    [c or 0 for c in named], dtype=torch.long, device=ids.device
                )
                sample = {"image": image[i : i + 1]}
                if location is not None:
                    sample["location"] = location[i : i + 1]
                _, logits, _ = self.forward_with_masks(
                    sample, ids, torch.ones_like(ids), None, category
                )
            answer = self.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
            out.append((answer, logits, phrases, named))
        return out

    def predict_step(self, batch: ReferringBatch, batch_idx: int) -> list[dict[str, Any]]:
        """Generate each answer, then one mask per generated segmentation phrase.

        Args:
            batch: a referring batch (prompts).
            batch_idx: its index.

        Returns:
            One row per sample: id, question, answer, reference, masks (``K×H×W`` booleans at
            the model's input size, logits > 0), phrases, category, geo (and the file ``path``,
            ``chip`` and the masks' ``probabilities`` from an image folder).
        """
        decoded = self.decode_segmentations(
            batch["image"],
            batch["prompt_ids"],
            batch["prompt_attention_mask"],
            location=batch.get("location"),
        )
        rows = []
        for i, (answer, logits, phrases, named) in enumerate(decoded):
            rows.append(
                {
                    "id": batch["id"][i],
                    "question": batch["question"][i],
                    "answer": answer,
                    "reference": batch["reference"][i],
                    "masks": (logits > 0).cpu(),
                    "phrases": phrases,
                    "category": [None if c is None else self.class_names[c] for c in named],
                    "geo": batch.get("geo", [None] * len(decoded))[i],
                }
                | (
                    {
                        "path": batch["path"][i],
                        "chip": batch["chip"][i],
                        # blended across overlapping chips before thresholding (zoo.callbacks.geo)
                        "probabilities": logits.float().sigmoid().cpu(),
                    }
                    if "path" in batch
                    else {}
                )
            )
        return rows

    def segment(
        self, image: Tensor | Any, question: str, max_new_tokens: int | None = None
    ) -> Segmentation:
        """Answer a question about one image with masks: no datamodule needed.

        The prompt is :meth:`answer`'s; the masks are :meth:`predict_step`'s
        (:meth:`decode_segmentations`). For a raw image the mask logits are resized back to
        the image's own size: bilinearly (``align_corners=False``) to the square the model's
        :attr:`transform` resized from (the padded square with ``pad_to_square``, whose
        padding is then cropped off), and thresholded at 0 (probability 0.5). A normalized
        ``1×C×S×S`` tensor gives masks at the model's input size ``S×S``.

        Args:
            image: one raw image (PIL, or a ``C×H×W`` array or tensor in the units the model
                was trained on), or one normalized image ``1×C×S×S``
                (``transform(im)[None]``).
            question: the question (``<image>`` is put in front when missing).
            max_new_tokens: the most tokens of the answer, for this call only (None:
                ``generation.max_new_tokens``).

        Returns:
            The answer, its masks, phrases and categories.

        Raises:
            ValueError: a batch of more than one image.
        """
        if isinstance(image, Tensor) and image.ndim == 4:
            if len(image) != 1:
                raise ValueError(
                    f"segment takes one image; got a batch of {len(image)} (call it per image)"
                )
            batch, size = image, None
        else:
            batch, size = [image], tuple(self.transform.pixels(image).shape[-2:])
        with torch.inference_mode():
            pixels, prompt, mask = self._inference_inputs(batch, question)
            generation = self._generation_for(max_new_tokens)
            ((answer, logits, phrases, named),) = self.decode_segmentations(
                pixels, prompt, mask, generation
            )
            if size is not None:
                logits = self._to_image_size(logits, size)
            return Segmentation(
                answer=answer,
                masks=(logits > 0).cpu(),
                phrases=phrases,
                categories=[None if c is None else self.class_names[c] for c in named],
                logits=logits.float().cpu(),
            )

    def _to_image_size(self, logits: Tensor, size: tuple[int, int]) -> Tensor:
        """Mask logits at the model's input size resized back to a raw image's ``H×W``
        (through the padded square, then cropped, with ``pad_to_square``)."""
        h, w = size
        square = bool(self.preprocessing and self.preprocessing.pad_to_square) and h != w
        side = max(h, w) if square else None
        target = (side, side) if square else (h, w)
        if len(logits) and tuple(logits.shape[-2:]) != target:
            logits = nn.functional.interpolate(
                logits[:, None].float(), size=target, mode="bilinear", align_corners=False
            )[:, 0]
        elif not len(logits):
            logits = logits.new_zeros(0, *target)
        if square:  # pad_to_square centred the image: crop its padding off
            top, left = (side - h) // 2, (side - w) // 2
            logits = logits[:, top : top + h, left : left + w]
        return logits

    def _complete_phrases(self, seg: Tensor, complete: int) -> int:
        """Position of the last token of the ``complete``-th segmentation phrase."""
        positions = (seg >= 0).nonzero().squeeze(1)
        return int(positions[complete * self.tokens_per_target - 1])

    def target_texts(self, ids: Tensor, count: int) -> list[str]:
        """The words written before each of the first ``count`` segmentation phrases.

        Args:
            ids: an answer's token ids.
            count: how many phrases.

        Returns:
            Each phrase's words since the previous phrase, lower case: "sure, the storage tank
            left of the ship is".
        """
        seg = torch.isin(ids, self.seg_token_ids.to(ids.device))
        starts = seg.nonzero().squeeze(1)[:: self.tokens_per_target][:count].tolist()
        texts, previous = [], 0
        for start in starts:  # a handful of targets, not tokens
            span = ids[previous:start][~seg[previous:start]]
            texts.append(self.tokenizer.decode(span, skip_special_tokens=True).lower())
            previous = start
        return texts

    def categories_from_text(self, ids: Tensor, count: int) -> Tensor:
        """The memory category of each target.

        The first class name written between the previous phrase and its own (the head noun of
        "the storage tank left of the ship").

        Args:
            ids: an answer's token ids.
            count: how many phrases.

        Returns:
            The categories ``(count,)``.
        """
        categories = [self._first_class(text) for text in self.target_texts(ids, count)]
        return torch.tensor(categories, dtype=torch.long, device=ids.device)


def _phrase(text: str) -> str:
    """A target's referring phrase from the words before its segmentation tokens: without the
    answer's "sure," and the final "is" ("sure, the ship is" -> "the ship")."""
    text = re.sub(r"\s+([,.])", r"\1", text).strip().strip(",").strip()
    text = text.removeprefix("sure,").strip()
    if text == "is" or text.endswith(" is"):
        text = text[:-2]
    return text.strip(" ,")


def _memory_under_decoder(
    module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_: Any
) -> None:
    """Checkpoints from before the decoder owned the memory name its weights ``memory.*``."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}memory.")]:
        state_dict[f"{prefix}decoder.{key[len(prefix) :]}"] = state_dict.pop(key)
