"""FLAVARS: FLAVA's pretraining of image, text and location encoders (arXiv 2501.08490).

One image encoder (a ViT), one text encoder, FLAVA's multimodal encoder over both token
sequences and a SatCLIP location encoder (spherical harmonics + SIREN). The image, text and
multimodal encoders, projections and heads are one :class:`~zoo.encoders.encoder_set.EncoderSet`
(``self.encoders``): the zoo's (:class:`~zoo.encoders.zoo_encoders.ZooEncoders`: timm / BERT,
random and small by default) or, with ``flava: {folder: <folder>}``, transformers' own FLAVA
modules with FLAVA's weights (:class:`~zoo.encoders.flava.FlavaEncoders`); the model reads
only the interface, so it never asks which. The objectives, the masked pass's draw and the
masked losses are :mod:`zoo.models.flavars_objectives`.

Checkpoints of zoo 0.1 (flat arguments; encoders at the top of the state dict, or under
``flava.``) load: :mod:`zoo.models.flavars_upgrade` groups their arguments, moves their weights
under ``encoders.`` (a load-state-dict pre-hook) and their optimizer state with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy
from transformers import PreTrainedTokenizerBase

from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD, ImageTextBatch
from zoo.encoders.encoder_set import EncoderSet
from zoo.encoders.flava import FlavaSpec, ImageCodebook
from zoo.encoders.location import LocationSpec, validate_locations
from zoo.encoders.text import TextSpec
from zoo.encoders.vision import VisionSpec
from zoo.encoders.zoo_encoders import FusionSpec, build_encoder_set
from zoo.groups import as_group
from zoo.losses.contrastive import contrastive_loss, init_logit_scale
from zoo.metrics import CrossModalRetrieval, KNNAccuracy, LocationRetrievalError, zero_shot_logits
from zoo.models.base import OptimizerConfig, ZooTask
from zoo.models.flavars_objectives import (
    LOSSES,
    MASKED_LOSSES,
    LossWeights,
    MaskingDraw,
    Objectives,
    draw_masks,
    masked_losses,
)
from zoo.models.flavars_upgrade import (
    upgrade_hyperparameters,
    upgrade_optimizer_state,
    upgrade_state_dict,
)

__all__ = [
    "FLAVARS",
    "LOSSES",
    "MASKED_LOSSES",
    "EvaluationSettings",
    "LossWeights",
    "MaskingDraw",
    "Objectives",
    "upgrade_state_dict",
]


@dataclass
class EvaluationSettings:
    """How FLAVARS evaluates its embeddings during validation and test.

    Args:
        knn_k: neighbours of the frozen-feature k-NN evaluation.
        prompt_templates: zero-shot prompts; ``{}`` is replaced by the class name (None:
            ``a satellite image of {}.``).
    """

    knn_k: int = 20
    prompt_templates: list[str] | None = None


#: AdamW and schedule of the embedded-data default (the paper config sets FLAVA's).
FLAVARS_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98), warmup_fraction=0.05
)
#: The defaults of each group (module constants, so a signature shows them).
ZOO_VISION, ZOO_TEXT, NO_FLAVA = VisionSpec(), TextSpec(), FlavaSpec()
SMALL_FUSION, SMALL_LOCATION = FusionSpec(), LocationSpec()
FLAVA_OBJECTIVES, EVALUATION = Objectives(), EvaluationSettings()


class FLAVARS(ZooTask):
    """FLAVA's image-text pretraining plus image-location contrastive learning.

    After training, from Python (no datamodule)::

        import torch
        from PIL import Image

        import zoo

        model, transform, tokenizer = zoo.load("runs/flavars/.../checkpoints/last.ckpt")
        images = torch.stack([transform(Image.open(p)) for p in ["a.png", "b.png"]])
        image_emb = model.encode_image(images)  # B×E, unit vectors
        text_emb = model.encode_text(["a satellite image of a lake", "a forest"])
        similarity = image_emb @ text_emb.T
        where = model.encode_location([(48.85, 2.35), (-33.87, 151.21)])  # (lat, lon) degrees
        probs = model.zero_shot(images)  # B×K over model.class_names (or class_names=[...])

    Args:
        vision: the zoo's image encoder (a ViT in the paper; unused with ``flava.folder``).
        text: the zoo's text encoder (unused with ``flava.folder``).
        flava: FLAVA's encoders (``folder``) and the codebook whose codes masked image modelling
            predicts (``codebook``; None predicts normalized pixels).
        fusion: the zoo's multimodal fusion encoder (unused with ``flava.folder``).
        location: the SatCLIP location encoder.
        objectives: the pretraining losses, their weights and the masked pass's draw.
        evaluation: k-NN and zero-shot evaluation settings.
        embed_dim: width of the shared image-text-location embedding space (FLAVA's own with
            ``flava.folder``).
        image_size: input size in pixels (linked from the data).
        class_names: scene classes for zero-shot evaluation (linked from the data).
        tokenizer: the data's tokenizer (linked from the data).
        image_mean: the per-band mean of [0, 1] pixels the data normalizes with, which the
            codebook undoes: None is the ``flava`` folder's (the data's, by the CLI's link) or
            else the data's default (ImageNet's); set it with the data's ``mean`` otherwise.
        image_std: the per-band standard deviation, likewise.
        in_channels: the bands of an image (linked from the data's ``num_channels``); the
            encoder set's image stem reads them (a pretrained RGB stem adapted by timm's rule).
        optimizer: AdamW and its warm-up + cosine schedule.

    Raises:
        ValueError: no tokenizer, or a setting out of its range.
    """

    def __init__(
        self,
        vision: VisionSpec = ZOO_VISION,
        text: TextSpec = ZOO_TEXT,
        flava: FlavaSpec = NO_FLAVA,
        fusion: FusionSpec = SMALL_FUSION,
        location: LocationSpec = SMALL_LOCATION,
        objectives: Objectives = FLAVA_OBJECTIVES,
        evaluation: EvaluationSettings = EVALUATION,
        embed_dim: int = 128,
        image_size: int = 64,
        class_names: list[str] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        in_channels: int = 3,
        optimizer: OptimizerConfig = FLAVARS_OPTIMIZER,
    ) -> None:
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["tokenizer"])
        if tokenizer is None:
            raise ValueError(
                "FLAVARS needs the data's tokenizer: pass tokenizer=datamodule.tokenizer (the zoo "
                "CLI links it from the datamodule)"
            )
        vision, flava = VisionSpec.of(vision), FlavaSpec.of(flava)
        text, fusion = as_group(TextSpec, text, "text"), as_group(FusionSpec, fusion, "fusion")
        location, evaluation = (
            as_group(LocationSpec, location, "location"),
            as_group(EvaluationSettings, evaluation, "evaluation"),
        )
        self.objectives = Objectives.of(objectives)
        self.evaluation = evaluation
        self.tokenizer = tokenizer
        self.class_names = list(class_names or [])
        self.prompt_templates = list(evaluation.prompt_templates or ["a satellite image of {}."])
        self.weights = self.objectives.weights
        temperature = self.objectives.temperature

        self.encoders: EncoderSet = build_encoder_set(
            flava,
            vision,
            text,
            fusion,
            len(tokenizer),
            image_size,
            embed_dim,
            temperature,
            in_channels,
        )
        embed_dim = self.encoders.embed_dim
        self.location_encoder = location.build(embed_dim, max_latitude=89.95)
        self.location_projection = nn.Linear(self.location_encoder.dim_out, embed_dim)
        self.location_logit_scale = init_logit_scale(temperature)

        self.codebook: ImageCodebook | None = None
        if flava.codebook is not None:
            if in_channels != 3:
                raise ValueError(
                    f"flava.codebook reads RGB images but the data has {in_channels} bands: "
                    "drop the codebook (masked image modelling then predicts the bands' pixels)"
                )
            mean, std = self.encoders.normalization or (IMAGENET_MEAN, IMAGENET_STD)
            mean, std = tuple(image_mean or mean), tuple(image_std or std)
            self.codebook = ImageCodebook(flava.codebook, mean, std)
        self.encoders.predict_image_targets(
            None if self.codebook is None else self.codebook.vocab_size
        )
        self._location_warned = False

        self.metrics = nn.ModuleDict({split: self._split_metrics() for split in ("val", "test")})
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self.register_load_state_dict_pre_hook(self._upgrade_state_dict)

    #: zoo 0.1's state-dict keys in this version's (:func:`upgrade_state_dict`).
    upgrade_state_dict = staticmethod(upgrade_state_dict)

    @classmethod
    def upgrade_hyperparameters(cls, hparams: Mapping[str, Any]) -> dict[str, Any]:
        """zoo 0.1's flat hyper-parameters in this version's groups
        (:func:`~zoo.models.flavars_upgrade.upgrade_hyperparameters`).

        Args:
            hparams: a checkpoint's hyper-parameters (keys starting with ``_`` dropped).

        Returns:
            A copy with every flat key in its group (unchanged when there are none).
        """
        return upgrade_hyperparameters(hparams)

    def _upgrade_state_dict(
        self, module: nn.Module, state: dict[str, Any], prefix: str, *args: Any
    ) -> None:
        """Load-state-dict pre-hook: zoo 0.1's keys moved in place (:func:`upgrade_state_dict`)."""
        upgraded = upgrade_state_dict(state, prefix)
        if list(upgraded) != list(state):
            state.clear()
            state.update(upgraded)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resume from a zoo 0.1 checkpoint: its optimizer state follows its parameters to their
        new places (:func:`~zoo.models.flavars_upgrade.upgrade_optimizer_state`).

        Args:
            checkpoint: the Lightning checkpoint being restored.
        """
        upgrade_optimizer_state(checkpoint, self)

    def _split_metrics(self) -> nn.ModuleDict:
        metrics = nn.ModuleDict(
            {
                "retrieval": CrossModalRetrieval(prefix_a="image", prefix_b="text"),
                "location": CrossModalRetrieval(prefix_a="image", prefix_b="location"),
                "location_error": LocationRetrievalError(),
            }
        )
        if len(self.class_names) > 1:
            n = len(self.class_names)
            metrics["zero_shot_acc"] = MulticlassAccuracy(n, average="micro")
            metrics["knn_acc"] = KNNAccuracy(n, k=self.evaluation.knn_k)
        return metrics

    # ----------------------------------------------------------------------------- encoders
    @property
    def patch_size(self) -> tuple[int, int]:
        """``(h, w)`` pixels of one patch of the image encoder."""
        return self.encoders.patch_size

    @property
    def grid_size(self) -> tuple[int, int]:
        """``(rows, columns)`` of the image encoder's patch grid."""
        return self.encoders.grid_size

    @property
    def logit_scale(self) -> Tensor:
        """The image-text logit scale (its log): the encoder set's (``zoo demo`` reads it)."""
        return self.encoders.logit_scale

    @property
    def num_patches(self) -> int:
        """Patches of one image."""
        return self.encoders.num_patches

    def image_features_and_embedding(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled features and unit embeddings of one pass of the image encoder (what
        validation reads: the embedding for retrieval and zero-shot, the features for k-NN).

        Args:
            image: ``B×C×H×W`` normalized pixels, on the model's device.

        Returns:
            (pooled backbone features ``B×D_v``, unit image embedding ``B×E``).
        """
        pooled = self.encoders.image(image).pooled
        return pooled, F.normalize(self.encoders.image_projection(pooled), dim=-1)

    def encode_image(self, images: Tensor) -> Tensor:
        """Unit image embeddings, as open_clip's ``encode_image``.

        Args:
            images: ``B×C×H×W`` normalized images, e.g. ``torch.stack([transform(img) for img
                in imgs])`` with :func:`zoo.load`'s ``transform``; on any device (moved to the
                model's device and dtype).

        Returns:
            ``B×E`` unit embeddings, on the model's device.

        Raises:
            TypeError: ``images`` is not a floating-point tensor (raw pixels: pass them through
                the transform first).
            ValueError: ``images`` is not ``B×C×H×W``.
        """
        return self.image_features_and_embedding(self._images_on_model(images))[1]

    def _images_on_model(self, images: Tensor) -> Tensor:
        """``images`` checked (type and shape only: no value is read) and on the model's device
        and dtype."""
        hint = "stack the transformed images: torch.stack([transform(img) for img in imgs])"
        if not isinstance(images, Tensor) or not images.is_floating_point():
            kind = images.dtype if isinstance(images, Tensor) else type(images).__name__
            raise TypeError(f"images must be normalized float pixels, got {kind}: {hint}")
        if images.ndim != 4:
            raise ValueError(f"images must be B×C×H×W, got shape {tuple(images.shape)}: {hint}")
        return images.to(device=self.device, dtype=self.dtype)

    def image_features(self, image: Tensor) -> Tensor:
        """Pooled backbone features (frozen-feature evaluation).

        Args:
            image: ``B×C×H×W`` normalized pixels.

        Returns:
            ``B×D_v`` features.
        """
        return self.encoders.image(image).pooled

    def dense_encoder(self) -> nn.Module:
        """A copy of the image encoder with timm's multi-scale interface (UPerNet segmentation):
        FLAVA's behind :class:`~zoo.encoders.flava.FlavaImageIntermediates`, or the timm model.

        Returns:
            The copy.
        """
        return self.encoders.dense_encoder()

    def encode_text(
        self,
        texts: Sequence[str] | str | Tensor | None = None,
        attention_mask: Tensor | None = None,
        *,
        input_ids: Tensor | None = None,
    ) -> Tensor:
        """Unit text embeddings from the [CLS] state.

        ``encode_text(["a lake", "a forest"])`` tokenizes with the model's own tokenizer
        (:meth:`tokenize`); ``encode_text(input_ids, attention_mask)`` and
        ``encode_text(**model.tokenize(texts))`` take token ids.

        Args:
            texts: the texts (a string is one text), or ``B×T`` token ids.
            attention_mask: ``B×T`` the token ids' attention mask (None: every token attends).
            input_ids: ``B×T`` token ids, by keyword (instead of ``texts``).

        Returns:
            ``B×E`` unit embeddings, on the model's device.

        Raises:
            TypeError: neither texts nor token ids, or both, or a mask given with texts.
        """
        if input_ids is not None:
            if texts is not None:
                raise TypeError("encode_text takes texts or input_ids, not both")
            texts = input_ids
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, Tensor):
            ids = texts.to(self.device)
            mask = torch.ones_like(ids) if attention_mask is None else attention_mask.to(ids.device)
        elif isinstance(texts, Sequence) and all(isinstance(t, str) for t in texts) and texts:
            if attention_mask is not None:
                raise TypeError("encode_text: an attention_mask goes with token ids, not texts")
            tokens = self.tokenize(list(texts))
            ids, mask = tokens["input_ids"], tokens["attention_mask"]
        else:
            raise TypeError(
                "encode_text expects a non-empty list of strings or B×T token ids (with their "
                f"attention_mask), got {type(texts).__name__}"
            )
        states = self.encoders.text(ids, mask).states
        return F.normalize(self.encoders.text_projection(states[:, 0]), dim=-1)

    def matching_logits(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """ITM logits of each image with its caption.

        Args:
            image: ``B×C×H×W`` normalized pixels.
            input_ids: ``B×T`` the captions' token ids.
            attention_mask: ``B×T`` their attention mask.

        Returns:
            ``B×2`` logits (index 1: "matches").
        """
        encoders = self.encoders
        img, txt = encoders.image(image), encoders.text(input_ids, attention_mask)
        fused = encoders.fuse(*encoders.project(img.fusion_input, txt.fusion_input), attention_mask)
        return encoders.itm_logits(fused.states)

    def encode_location(self, location: Tensor | Sequence[tuple[float, float]]) -> Tensor:
        """Unit location embeddings.

        Args:
            location: ``B×2`` (lat, lon) in degrees: a tensor, or pairs such as
                ``[(48.85, 2.35), (-33.9, 151.2)]``.

        Returns:
            ``B×E`` unit embeddings, on the model's device.

        Raises:
            TypeError: not real-valued coordinates.
            ValueError: not ``B×2``, or a value that is not finite, a latitude outside
                [-90, 90] or a longitude outside [-180, 180] (the message names it).
        """
        if not isinstance(location, Tensor):
            location = torch.as_tensor(location, dtype=torch.float64)
        if not location.is_floating_point() and location.dtype != torch.bool:
            location = location.double()
        validate_locations(location, "location")  # reads the values: inference only
        return self._location_embedding(location.to(self.device))

    def _location_embedding(self, location: Tensor) -> Tensor:
        """Unit embeddings of ``B×2`` (lat, lon) degrees already checked and on the device (the
        batch's, whose dataset checked them: validation reads no value back to the host)."""
        features = self.location_encoder(location).to(self.location_projection.weight.dtype)
        return F.normalize(self.location_projection(features), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Tokenize texts with the data's tokenizer, on the model's device.

        Args:
            texts: the texts.

        Returns:
            ``input_ids`` and ``attention_mask``, padded to the longest.
        """
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {
            k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")
        }

    # ----------------------------------------------------------------------------- training
    def draw_masks(self, batch: ImageTextBatch, image_emb: Tensor, text_emb: Tensor) -> MaskingDraw:
        """The masked pass's random choices (:func:`~zoo.models.flavars_objectives.draw_masks`).

        Args:
            batch: the batch (its ``input_ids`` and ``attention_mask``).
            image_emb: ``B×E`` the unmasked pass's image embeddings.
            text_emb: ``B×E`` its text embeddings.

        Returns:
            The draw: patches, tokens and the matching pairs.
        """
        return draw_masks(
            self.objectives,
            self.tokenizer,
            self.grid_size,
            batch["input_ids"],
            batch["attention_mask"],
            image_emb,
            text_emb,
            self.encoders.logit_scale,
        )

    def compute_losses(
        self, batch: ImageTextBatch, draw: MaskingDraw | None = None
    ) -> dict[str, Tensor]:
        """All enabled losses of one batch.

        Args:
            batch: the batch.
            draw: the masked pass's random choices (None: drawn here).

        Returns:
            Each enabled loss (unweighted) and their weighted sum under ``loss``.
        """
        image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
        w, encoders = self.weights, self.encoders
        losses: dict[str, Tensor] = {}
        img = encoders.image(image)
        txt = encoders.text(ids, mask)
        image_emb = encoders.image_projection(img.pooled)
        text_emb = encoders.text_projection(txt.states[:, 0])
        if w["contrastive"]:
            losses["contrastive"] = contrastive_loss(image_emb, text_emb, encoders.logit_scale)
        if w["location"] and self._has_location(batch):
            location = self.location_encoder(batch["location"]).to(image_emb.dtype)
            location_emb = self.location_projection(location)
            losses["location"] = contrastive_loss(
                image_emb, location_emb, self.location_logit_scale
            )
        if any(w[name] for name in MASKED_LOSSES):
            draw = draw if draw is not None else self.draw_masks(batch, image_emb, text_emb)
            losses.update(masked_losses(encoders, self.codebook, w, image, mask, draw))
        losses["loss"] = sum(w[name] * value for name, value in losses.items())
        return losses

    def _has_location(self, batch: ImageTextBatch) -> bool:
        if "location" in batch:
            return True
        if not self._location_warned:
            rank_zero_warn(
                "the batch has no 'location' (the dataset has no coordinates): the image-location "
                "loss is switched off. Set model.init_args.objectives.loss_weights.location: 0 to silence this"
            )
            self._location_warned = True
        return False

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        """Every enabled loss of the batch, logged; their weighted sum is optimized.

        Args:
            batch: the batch.
            batch_idx: its index in the epoch.

        Returns:
            The weighted sum.
        """
        losses = self.compute_losses(batch)
        b = len(batch["image"])
        self.log_dict(
            {f"train_{k}_loss": v for k, v in losses.items() if k != "loss"}, batch_size=b
        )
        self.log("train_loss", losses["loss"], batch_size=b, prog_bar=True)
        self.log("logit_scale", self.encoders.logit_scale.exp(), batch_size=b)
        return losses["loss"]

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def zero_shot_class_embeddings(
        self, class_names: Sequence[str] | None = None, templates: Sequence[str] | None = None
    ) -> Tensor:
        """Unit class embeddings: prompt embeddings averaged over the templates.

        Args:
            class_names: the classes (None: the model's, from its training data).
            templates: prompts, ``{}`` replaced by the class name (None: the model's,
                ``evaluation.prompt_templates``).

        Returns:
            ``K×E`` one embedding per class name.

        Raises:
            ValueError: no class names (none given and the model has none), or no templates.
        """
        names = list(self.class_names if class_names is None else class_names)
        templates = list(self.prompt_templates if templates is None else templates)
        if not names:
            raise ValueError(
                f"{type(self).__name__} has no class names (its training data had no scene "
                "classes): pass class_names=[...]"
            )
        if not templates:
            raise ValueError(
                "templates is empty: pass prompts such as ['a satellite image of {}.']"
            )
        prompts = [t.format(c) for c in names for t in templates]
        tokens = self.tokenize(prompts)
        unk = self.tokenizer.unk_token_id
        if unk is not None and (tokens["input_ids"] == unk).any():
            rank_zero_warn("some zero-shot prompt words are unknown to the tokenizer ([UNK])")
        emb = self.encode_text(tokens["input_ids"], tokens["attention_mask"])
        emb = emb.view(len(names), len(templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    @torch.inference_mode()
    def zero_shot(
        self,
        images: Tensor,
        class_names: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
    ) -> Tensor:
        """Zero-shot class probabilities: the softmax of the cosine similarities of the images
        to the class embeddings (:meth:`zero_shot_class_embeddings`), scaled by the learnt
        logit scale. Its argmax is validation's zero-shot prediction.

        Args:
            images: ``B×C×H×W`` normalized images (as for :meth:`encode_image`).
            class_names: the classes (None: the model's, from its training data).
            templates: prompts, ``{}`` replaced by the class name (None: the model's).

        Returns:
            ``B×K`` probabilities, one column per class name, on the model's device.

        Raises:
            ValueError: no class names (none given and the model has none).
        """
        classes = self.zero_shot_class_embeddings(class_names, templates)
        logits = zero_shot_logits(self.encode_image(images), classes)
        return (logits * self.logit_scale.exp()).softmax(dim=-1)

    def _eval_step(self, split: str, batch: ImageTextBatch) -> None:
        metrics = self.metrics[split]
        features, image_emb = self.image_features_and_embedding(batch["image"])
        text_emb = self.encode_text(batch["input_ids"], batch["attention_mask"])
        metrics["retrieval"].update(image_emb, text_emb)
        b = len(image_emb)
        loss = contrastive_loss(image_emb, text_emb, self.encoders.logit_scale, gather=False)
        self.log(f"{split}_contrastive_loss", loss, batch_size=b, sync_dist=True)
        if "location" in batch:
            location_emb = self._location_embedding(batch["location"])
            metrics["location"].update(image_emb, location_emb)
            metrics["location_error"].update(image_emb, location_emb, batch["location"])
        if "label" in batch and "zero_shot_acc" in metrics:
            if self.class_embeddings.numel() == 0:
                self.class_embeddings = self.zero_shot_class_embeddings()
            logits = zero_shot_logits(image_emb, self.class_embeddings)
            metrics["zero_shot_acc"].update(logits, batch["label"])
            metrics["knn_acc"].update(features, batch["label"])

    def _eval_epoch_end(self, split: str) -> None:
        values: dict[str, Tensor] = {}
        for name, metric in self.metrics[split].items():
            if not metric.update_called:
                continue
            result = metric.compute()
            if isinstance(result, dict):
                scope = "image_to_location_" if name == "location_error" else ""
                values.update({f"{split}_{scope}{k}": v for k, v in result.items()})
            else:
                values[f"{split}_{name}"] = result
            metric.reset()
        self.log_dict(values)
        self.class_embeddings = torch.empty(0, device=self.device)

    def validation_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        """Update the validation metrics (retrieval, location, zero-shot and k-NN accuracy).

        Args:
            batch: the batch.
            batch_idx: its index in the epoch.
        """
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        """Log the validation metrics and reset them."""
        self._eval_epoch_end("val")

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        """Update the test metrics (retrieval, location, zero-shot and k-NN accuracy).

        Args:
            batch: the batch.
            batch_idx: its index in the epoch.
        """
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        """Log the test metrics and reset them."""
        self._eval_epoch_end("test")

    def predict_step(self, batch: ImageTextBatch, batch_idx: int) -> dict[str, Tensor]:
        """Unit embeddings of the batch.

        Args:
            batch: the batch (an image batch; captions and locations where it has them).
            batch_idx: its index.

        Returns:
            ``image`` and, when present, ``text`` and ``location`` embeddings ``B×E``.
        """
        out = {"image": self.image_features_and_embedding(batch["image"])[1]}
        if "input_ids" in batch:
            out["text"] = self.encode_text(batch["input_ids"], batch["attention_mask"])
        if "location" in batch:
            out["location"] = self._location_embedding(batch["location"])
        return out
