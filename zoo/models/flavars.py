"""FLAVARS: FLAVA's pretraining of image, text and location encoders (arXiv 2501.08490).

One image encoder (a ViT), one text encoder, FLAVA's multimodal encoder over both token
sequences and a SatCLIP location encoder (spherical harmonics + SIREN). The encoders are the
zoo's (timm / BERT, random and small by default) or, with ``flava: <folder>``, transformers'
own FLAVA modules with FLAVA's weights (:class:`zoo.encoders.flava.FlavaEncoders`).

Losses, each weighted and switched off by a weight of 0 (``loss_weights``), and the pass each
one reads, as in FLAVA (``FlavaForPreTraining``):

* ``contrastive``: global image-text InfoNCE on the **unmasked** pair ([CLS] -> projection);
* ``location``: image-location InfoNCE, the same form, unmasked image (the paper's "+LE");
* ``mim``: unimodal masked image modelling on the **masked image** pass: BEiT block masks
  (``mim_masking``), the DALL-E codebook's codes as targets when ``codebook`` is given
  (cross-entropy over its 8192 codes), else normalized pixels;
* ``mlm``: unimodal masked language modelling on the **masked text** pass (BERT's 15 %);
* ``itm``: image-text matching on the fusion of the **masked** image and **masked** text
  (FLAVA's ITM reads the masked pass too). ``itm_layout: flava`` (the default) fuses B rows as
  FLAVA does: each image keeps its caption or, with probability ``itm_negative_probability``,
  gets a negative caption; ``albef`` fuses 3B rows (B positives, B negative texts, B negative
  images). Negatives are hard ones drawn by the logit-scaled similarity (``itm_negatives:
  hard``, ALBEF's rule) or uniform ones (``random``, FLAVA's);
* ``mmm_image`` / ``mmm_text``: masked multimodal modelling: heads on the fused states of the
  masked pair predict the masked patches' targets and the masked tokens, counted on the
  positive pairs only (as FLAVA; on every pair when a batch draws none).

So one unmasked and one masked pass per encoder, one fusion pass over the matching pairs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy
from transformers import PreTrainedTokenizerBase

from zoo.data.batch import IMAGENET_MEAN, IMAGENET_STD, ImageTextBatch
from zoo.encoders.flava import FlavaEncoders, ImageCodebook, ImageStates, TextStates
from zoo.encoders.location import LocationEncoder
from zoo.encoders.text import TextEncoder
from zoo.encoders.vision import VisionEncoder
from zoo.io import read_processor_settings
from zoo.layers.attention import dense_attention_mask
from zoo.layers.fusion import FusionEncoder, MatchingHead, prediction_head
from zoo.losses.contrastive import MAX_LOGIT_SCALE, contrastive_loss, init_logit_scale
from zoo.losses.masked import (
    block_patch_mask,
    mask_text_tokens,
    masked_pixel_loss,
    masked_token_loss,
    pixel_targets,
    random_patch_mask,
    token_loss,
)
from zoo.losses.matching import mix_negative_pairs, sample_negatives
from zoo.metrics import CrossModalRetrieval, KNNAccuracy, LocationRetrievalError, zero_shot_logits
from zoo.models.base import OptimizerConfig, ZooTask

__all__ = ["FLAVARS", "LossWeights", "FusionEncoder", "MaskingDraw"]

LOSSES = ("mim", "mlm", "itm", "mmm_image", "mmm_text", "contrastive", "location")
#: The losses that read the masked pass.
MASKED_LOSSES = ("mim", "mlm", "itm", "mmm_image", "mmm_text")


@dataclass(frozen=True)
class LossWeights:
    """The weight of each FLAVARS loss; 0 switches it off (YAML: ``loss_weights: {location: 0}``,
    keys left out keep 1).

    Attributes:
        mim: unimodal masked image modelling.
        mlm: unimodal masked language modelling.
        itm: image-text matching.
        mmm_image: masked multimodal modelling, image half (the masked patches from fused states).
        mmm_text: masked multimodal modelling, text half (the masked tokens from fused states).
        contrastive: image-text contrastive.
        location: image-location contrastive (the paper's "+LE" ablation).
    """

    mim: float = 1.0
    mlm: float = 1.0
    itm: float = 1.0
    mmm_image: float = 1.0
    mmm_text: float = 1.0
    contrastive: float = 1.0
    location: float = 1.0

    def __post_init__(self) -> None:
        for name in LOSSES:
            if getattr(self, name) < 0:
                raise ValueError(f"loss_weights.{name} must be >= 0, got {getattr(self, name)}")


#: Every loss on, with weight 1.
ALL_LOSSES = LossWeights()


#: AdamW and schedule of the embedded-data default (the paper config sets FLAVA's).
FLAVARS_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.98), warmup_fraction=0.05
)


@dataclass
class MaskingDraw:
    """The random choices of one step's masked pass (drawn by :meth:`FLAVARS.draw_masks`, or
    given, e.g. to compare with ``FlavaForPreTraining`` on the same choices).

    Attributes:
        patches: ``B×N`` bool, the masked patches.
        input_ids: ``B×T`` the masked token ids.
        mlm_labels: ``B×T`` the original ids where masked, -100 elsewhere.
        image_index: long ``P``: the image of each matching pair; None: pair ``b`` is image
            ``b`` (``P = B``, FLAVA's layout), so no image state is gathered.
        text_index: long ``P``: the caption of each matching pair.
        itm_target: long ``P``: 1 for a true pair, 0 for a negative.
    """

    patches: Tensor
    input_ids: Tensor
    mlm_labels: Tensor
    image_index: Tensor | None
    text_index: Tensor
    itm_target: Tensor


class FLAVARS(ZooTask):
    """FLAVA's image-text pretraining plus image-location contrastive learning.

    Args:
        vision_encoder: timm name, ``hf-hub:org/model`` or local folder (a ViT in the paper).
        vision_pretrained: load the vision encoder's named weights.
        vision_checkpoint: a local weight file for the vision encoder.
        image_size: input size in pixels (linked from the data).
        text_encoder: ``tiny``/``mini`` (random BERT) or a Hugging Face id / local folder.
        text_pretrained: load the text encoder's weights when it is named.
        flava: a local ``FlavaForPreTraining`` folder (``facebook/flava-full`` downloaded): the
            image, text and multimodal encoders, projections, logit scale and heads are FLAVA's
            (``vision_encoder``, ``text_encoder``, ``embed_dim`` and ``fusion_*`` are then unused);
            the zoo CLI gives the data the folder's tokenizer, image size and mean / std.
        codebook: a local ``FlavaImageCodebook`` folder: masked image modelling predicts its
            codes; None predicts normalized pixels.
        embed_dim: width of the shared image-text-location embedding space.
        fusion_width: width of the multimodal fusion encoder.
        fusion_layers: depth of the multimodal fusion encoder.
        fusion_heads: attention heads of the multimodal fusion encoder.
        legendre_polys: spherical-harmonic degree L of the location encoder (10 or 40).
        location_hidden: SIREN hidden width.
        location_layers: SIREN hidden layers.
        location_checkpoint: a SatCLIP checkpoint to initialize the location encoder from.
        loss_weights: the weight of each loss (0 switches it off).
        mim_mask_ratio: fraction of patches masked for image modelling (FLAVA: 75/196).
        mim_masking: ``block`` (BEiT's block-wise masks, FLAVA's) or ``random`` patches.
        mlm_probability: fraction of text tokens masked for language modelling.
        itm_negatives: ``hard`` (by logit-scaled similarity, ALBEF) or ``random`` (uniform, FLAVA's).
        itm_negative_probability: under ``itm_layout: flava``, the chance a caption is replaced
            by a negative (FLAVA: 0.5).
        itm_layout: the rows fused for ITM and MMM. ``flava``: B rows as FLAVA, positives and
            negatives together (each image keeps its caption or gets a negative one): one
            fusion pass over B sequences, MMM on about half of them (the kept pairs).
            ``albef``: 3B rows (B positives, B negative texts, B negative images, ALBEF's):
            three times the fusion's and the MMM heads' work (a step 1.6 times as long at the
            CPU benchmark's dimensions), for 2B negatives both ways and MMM on all B positives.
        temperature: initial contrastive temperature (logit scale ln(1/T), clamped at ln 100).
        knn_k: neighbours of the frozen-feature k-NN evaluation.
        prompt_templates: zero-shot prompts; ``{}`` is replaced by the class name.
        class_names: scene classes for zero-shot evaluation (linked from the data).
        tokenizer: the data's tokenizer (linked from the data).
        image_mean: the per-band mean of [0, 1] pixels the data normalizes with, which the codebook
            undoes: None is the ``flava`` folder's (the data's, by the CLI's link) or else the
            data's default (ImageNet's); set it with the data's ``mean`` otherwise.
        image_std: the per-band standard deviation, likewise.
        optimizer: AdamW and its warm-up + cosine schedule.
    """

    def __init__(
        self,
        vision_encoder: str = "zoo_vit_tiny",
        vision_pretrained: bool = False,
        vision_checkpoint: str | None = None,
        image_size: int = 64,
        text_encoder: str = "tiny",
        text_pretrained: bool = True,
        flava: str | None = None,
        codebook: str | None = None,
        embed_dim: int = 128,
        fusion_width: int = 128,
        fusion_layers: int = 2,
        fusion_heads: int = 4,
        legendre_polys: int = 10,
        location_hidden: int = 256,
        location_layers: int = 2,
        location_checkpoint: str | None = None,
        loss_weights: LossWeights = ALL_LOSSES,
        mim_mask_ratio: float = 0.4,
        mim_masking: Literal["block", "random"] = "block",
        mlm_probability: float = 0.15,
        itm_negatives: Literal["hard", "random"] = "hard",
        itm_negative_probability: float = 0.5,
        itm_layout: Literal["flava", "albef"] = "flava",
        temperature: float = 0.07,
        knn_k: int = 20,
        prompt_templates: list[str] | None = None,
        class_names: list[str] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        optimizer: OptimizerConfig = FLAVARS_OPTIMIZER,
    ) -> None:
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["tokenizer"])
        if tokenizer is None:
            raise ValueError(
                "FLAVARS needs the data's tokenizer: pass tokenizer=datamodule.tokenizer (the zoo "
                "CLI links it from the datamodule)"
            )
        if isinstance(loss_weights, dict):  # as stored in a checkpoint's hyper-parameters
            loss_weights = LossWeights(**loss_weights)
        if mim_masking not in ("block", "random"):
            raise ValueError(f"mim_masking must be 'block' or 'random', got {mim_masking!r}")
        if itm_negatives not in ("hard", "random"):
            raise ValueError(f"itm_negatives must be 'hard' or 'random', got {itm_negatives!r}")
        if itm_layout not in ("flava", "albef"):
            raise ValueError(f"itm_layout must be 'flava' or 'albef', got {itm_layout!r}")
        if not 0.0 <= itm_negative_probability <= 1.0:
            raise ValueError(
                f"itm_negative_probability must be in [0, 1], got {itm_negative_probability}"
            )
        self.tokenizer = tokenizer
        self.class_names = list(class_names or [])
        self.prompt_templates = list(prompt_templates or ["a satellite image of a {}."])
        self.weights = {name: getattr(loss_weights, name) for name in LOSSES}

        self.flava: FlavaEncoders | None = None
        if flava is not None:
            self.flava = FlavaEncoders(flava, vocab_size=len(tokenizer))
            if image_size != self.flava.image_size:
                raise ValueError(
                    f"image_size {image_size} but flava {flava!r} is trained at "
                    f"{self.flava.image_size} px: set the data's image_size to {self.flava.image_size}"
                )
            embed_dim, fusion_width = self.flava.embed_dim, self.flava.fusion_width
            vw, tw = self.flava.image_width, self.flava.text_width
            self.patch_size, self.grid_size = self.flava.patch_size, self.flava.grid_size
        else:
            self.vision_encoder = VisionEncoder(
                vision_encoder, image_size, vision_pretrained, vision_checkpoint
            )
            self.text_encoder = TextEncoder(
                text_encoder, len(tokenizer), pretrained=text_pretrained
            )
            vw, tw = self.vision_encoder.width, self.text_encoder.width
            self.patch_size, self.grid_size = (
                self.vision_encoder.patch_size,
                self.vision_encoder.grid_size,
            )
            self.image_projection = nn.Linear(vw, embed_dim)
            self.text_projection = nn.Linear(tw, embed_dim)
            self.logit_scale = init_logit_scale(temperature)
            self.fusion = FusionEncoder(vw, tw, fusion_width, fusion_layers, fusion_heads)
            self.itm_head = MatchingHead(fusion_width)
            self.mlm_head = prediction_head(tw, len(tokenizer))
            self.mmm_text_head = prediction_head(fusion_width, len(tokenizer))
        if location_checkpoint is not None:
            self.location_encoder = LocationEncoder.from_satclip_checkpoint(
                location_checkpoint, max_latitude=89.95
            )
        else:
            self.location_encoder = LocationEncoder(
                legendre_polys=legendre_polys,
                dim_hidden=location_hidden,
                num_layers=location_layers,
                dim_out=embed_dim,
                max_latitude=89.95,
            )
        self.location_projection = nn.Linear(self.location_encoder.dim_out, embed_dim)
        self.location_logit_scale = init_logit_scale(temperature)

        self.codebook: ImageCodebook | None = None
        pixels = self.patch_size[0] * self.patch_size[1] * 3
        if codebook is not None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            if flava is not None:
                settings = read_processor_settings(flava, "flava")
                mean, std = settings.mean, settings.std
            mean, std = tuple(image_mean or mean), tuple(image_std or std)
            self.codebook = ImageCodebook(codebook, mean, std)
            if self.flava is None:
                self.mim_head = prediction_head(vw, self.codebook.vocab_size)
                self.mmm_image_head = prediction_head(fusion_width, self.codebook.vocab_size)
            elif self.codebook.vocab_size != self.flava.image_vocab_size:
                raise ValueError(
                    f"codebook {codebook!r} has {self.codebook.vocab_size} codes but flava {flava!r} "
                    f"predicts {self.flava.image_vocab_size}: give FLAVA's own codebook"
                )
        else:  # pixel targets: FLAVA's heads predict codes, so pixel heads are new for it too
            self.mim_head = nn.Linear(vw, pixels)
            self.mmm_image_head = nn.Linear(fusion_width, pixels)
        self._location_warned = False

        self.metrics = nn.ModuleDict({split: self._split_metrics() for split in ("val", "test")})
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)

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
            metrics["knn_acc"] = KNNAccuracy(n, k=self.hparams.knn_k)
        return metrics

    # ------------------------------------------------------------------- the two encoder sets
    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def _image(self, image: Tensor, mask: Tensor | None = None) -> ImageStates:
        if self.flava is not None:
            return self.flava.image(image, mask)
        out = self.vision_encoder(image, mask)
        return ImageStates(out.pooled, out.tokens, out.tokens)

    def _text(self, input_ids: Tensor, attention_mask: Tensor) -> TextStates:
        if self.flava is not None:
            return self.flava.text(input_ids, attention_mask)
        states = self._text_states(input_ids, attention_mask)
        return TextStates(states, states)

    def _text_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The zoo text encoder's ``B×T×D`` states, given the 4-D attention mask built here: with
        the ``B×T`` one, Hugging Face checks ``mask.all()`` on the host at every step."""
        config = self.text_encoder.model.config
        mask = dense_attention_mask(
            attention_mask,
            config._attn_implementation,
            causal=False,
            dtype=self.text_encoder.model.dtype,
        )
        return self.text_encoder(input_ids, mask)

    def _fusion_inputs(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Each encoder's fusion input ``B×S×D`` projected into the fusion width (per row)."""
        return (self.flava if self.flava is not None else self.fusion).project(image, text)

    def _fuse(
        self, image: Tensor, text: Tensor, text_mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Fusion of projected inputs (:meth:`_fusion_inputs`): (all fused states ``B×S×W``,
        their patch part ``B×N×W``, their text part ``B×T×W``)."""
        if self.flava is not None:
            fused = self.flava.fuse(image, text, text_mask)
            return fused, *self.flava.split_fused(fused, text.shape[1])
        fused = self.fusion.encode(image, text, text_mask)
        n = image.shape[1]
        return fused, fused[:, 1 : 1 + n], fused[:, 1 + n :]

    def _itm_logits(self, fused: Tensor) -> Tensor:
        return self.flava.itm_logits(fused) if self.flava is not None else self.itm_head(fused)

    def _heads(self) -> tuple[nn.Module, nn.Module]:
        """(MLM head, MMM text head)."""
        if self.flava is not None:
            return self.flava.mlm_head, self.flava.mmm_text_head
        return self.mlm_head, self.mmm_text_head

    def _codebook_heads(self) -> tuple[nn.Module, nn.Module]:
        """(MIM head, MMM image head)."""
        if self.flava is not None and self.codebook is not None:
            return self.flava.mim_head, self.flava.mmm_image_head
        return self.mim_head, self.mmm_image_head

    def _project(
        self, image: Tensor | None, text: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Image / text features into the shared space (not normalized)."""
        owner = self.flava if self.flava is not None else self
        return (
            None if image is None else owner.image_projection(image),
            None if text is None else owner.text_projection(text),
        )

    def _logit_scale(self) -> Tensor:
        return self.flava.logit_scale if self.flava is not None else self.logit_scale

    # ----------------------------------------------------------------------------- encoders
    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled backbone features ``B×D_v``, unit image embedding ``B×E``)."""
        pooled = self._image(image).pooled
        return pooled, F.normalize(self._project(pooled, None)[0], dim=-1)

    def image_features(self, image: Tensor) -> Tensor:
        """Pooled backbone features ``B×D_v`` (frozen-feature evaluation)."""
        return self._image(image).pooled

    def dense_encoder(self) -> nn.Module:
        """A copy of the image encoder with timm's multi-scale interface (UPerNet segmentation):
        FLAVA's behind :class:`~zoo.encoders.flava.FlavaImageIntermediates`, or the timm model."""
        if self.flava is not None:
            return self.flava.dense_encoder()
        return copy.deepcopy(self.vision_encoder.model)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Unit text embeddings ``B×E`` from the [CLS] state."""
        states = self._text(input_ids, attention_mask).states
        return F.normalize(self._project(None, states[:, 0])[1], dim=-1)

    def matching_logits(self, image: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """ITM logits ``B×2`` (index 1: "matches") of each image with its caption."""
        img, txt = self._image(image), self._text(input_ids, attention_mask)
        fused = self._fuse(
            *self._fusion_inputs(img.fusion_input, txt.fusion_input), attention_mask
        )[0]
        return self._itm_logits(fused)

    def encode_location(self, location: Tensor) -> Tensor:
        """Unit location embeddings ``B×E`` from (lat, lon) in degrees."""
        features = self.location_encoder(location).to(self.location_projection.weight.dtype)
        return F.normalize(self.location_projection(features), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {
            k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")
        }

    # ----------------------------------------------------------------------------- training
    def draw_masks(self, batch: ImageTextBatch, image_emb: Tensor, text_emb: Tensor) -> MaskingDraw:
        """The masked pass's random choices: patches, tokens and the matching pairs."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        b, device = len(ids), ids.device
        ratio = self.hparams.mim_mask_ratio
        if self.hparams.mim_masking == "block":
            patches = block_patch_mask(b, self.grid_size, ratio, device=device)
        else:
            patches = random_patch_mask(b, self.num_patches, ratio, device)
        special = mask == 0
        for token in self.tokenizer.all_special_ids:  # a few ids: no table copied to the device
            special = special | (ids == token)
        masked_ids, labels = mask_text_tokens(
            ids,
            special,
            self.tokenizer.mask_token_id,
            len(self.tokenizer),
            self.hparams.mlm_probability,
        )
        with torch.no_grad():
            duplicate = (ids[:, None, :] == ids[None, :, :]).all(-1)
            hard = self.hparams.itm_negatives == "hard"
            sim = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T if hard else None
            scale = self._logit_scale().detach().clamp(max=MAX_LOGIT_SCALE).exp()
            negative_text, negative_image = sample_negatives(duplicate, sim, scale)
        if self.hparams.itm_layout == "flava":
            text_index, target = mix_negative_pairs(
                negative_text, self.hparams.itm_negative_probability
            )
            return MaskingDraw(patches, masked_ids, labels, None, text_index, target)
        rows = torch.arange(b, device=device)  # ALBEF's: positives, negative texts, negative images
        image_index, text_index = (
            torch.cat([rows, rows, negative_image]),
            torch.cat([rows, negative_text, rows]),
        )
        target = (torch.arange(3 * b, device=device) < b).long()
        return MaskingDraw(patches, masked_ids, labels, image_index, text_index, target)

    def compute_losses(
        self, batch: ImageTextBatch, draw: MaskingDraw | None = None
    ) -> dict[str, Tensor]:
        """All enabled losses of one batch (unweighted) and their weighted sum under 'loss';
        ``draw`` fixes the masked pass's random choices (else drawn here)."""
        image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
        w = self.weights
        losses: dict[str, Tensor] = {}
        img = self._image(image)
        txt = self._text(ids, mask)
        image_emb, text_emb = self._project(img.pooled, txt.states[:, 0])
        if w["contrastive"]:
            losses["contrastive"] = contrastive_loss(image_emb, text_emb, self._logit_scale())
        if w["location"] and self._has_location(batch):
            location = self.location_encoder(batch["location"]).to(image_emb.dtype)
            location_emb = self.location_projection(location)
            losses["location"] = contrastive_loss(
                image_emb, location_emb, self.location_logit_scale
            )
        if any(w[name] for name in MASKED_LOSSES):
            draw = draw if draw is not None else self.draw_masks(batch, image_emb, text_emb)
            losses.update(self._masked_losses(image, mask, draw))
        losses["loss"] = sum(w[name] * value for name, value in losses.items())
        return losses

    def _masked_losses(self, image: Tensor, mask: Tensor, draw: MaskingDraw) -> dict[str, Tensor]:
        """MIM, MLM, ITM and MMM from one masked pass of each encoder (see the module docstring)."""
        w = self.weights
        losses: dict[str, Tensor] = {}
        img = self._image(image, draw.patches)
        txt = self._text(draw.input_ids, mask)
        # B×N codebook codes, or B×N×P pixel targets: made once, for MIM and MMM alike.
        targets = (
            self.codebook(image, self.grid_size)
            if self.codebook is not None
            else pixel_targets(image, self.patch_size)
        )
        mim_head, mmm_image_head = self._codebook_heads()
        mlm_head, mmm_text_head = self._heads()
        if w["mim"]:
            losses["mim"] = self._image_loss(mim_head(img.patches), targets, draw.patches)
        if w["mlm"]:
            losses["mlm"] = token_loss(mlm_head(txt.states), draw.mlm_labels)
        if not (w["itm"] or w["mmm_image"] or w["mmm_text"]):
            return losses
        # Project each pass's B rows, then index the pairs (never project gathered copies).
        image_tokens, text_tokens = self._fusion_inputs(img.fusion_input, txt.fusion_input)
        patches = draw.patches
        if draw.image_index is not None:
            image_tokens, patches = image_tokens[draw.image_index], patches[draw.image_index]
            targets = targets[draw.image_index]
        fused, fused_image, fused_text = self._fuse(
            image_tokens, text_tokens[draw.text_index], mask[draw.text_index]
        )
        if w["itm"]:
            losses["itm"] = F.cross_entropy(self._itm_logits(fused).float(), draw.itm_target)
        # MMM on the positive pairs (all of them when the batch drew none, as FLAVA).
        positive = draw.itm_target == 1
        positive = positive | ~positive.any()
        if w["mmm_image"]:
            losses["mmm_image"] = self._image_loss(
                mmm_image_head(fused_image), targets, patches & positive[:, None]
            )
        if w["mmm_text"]:
            labels = draw.mlm_labels[draw.text_index].masked_fill(~positive[:, None], -100)
            losses["mmm_text"] = token_loss(mmm_text_head(fused_text), labels)
        return losses

    def _image_loss(self, prediction: Tensor, targets: Tensor, patches: Tensor) -> Tensor:
        """Codebook cross-entropy (``B×N`` codes) or pixel MSE (``B×N×P`` targets) on ``patches``."""
        if self.codebook is not None:
            return masked_token_loss(prediction, targets, patches)
        return masked_pixel_loss(prediction, targets, patches)

    def _has_location(self, batch: ImageTextBatch) -> bool:
        if "location" in batch:
            return True
        if not self._location_warned:
            rank_zero_warn(
                "the batch has no 'location' (the dataset has no coordinates): the image-location "
                "loss is switched off. Set model.init_args.loss_weights.location: 0 to silence this"
            )
            self._location_warned = True
        return False

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        losses = self.compute_losses(batch)
        b = len(batch["image"])
        self.log_dict(
            {f"train_{k}_loss": v for k, v in losses.items() if k != "loss"}, batch_size=b
        )
        self.log("train_loss", losses["loss"], batch_size=b, prog_bar=True)
        self.log("logit_scale", self._logit_scale().exp(), batch_size=b)
        return losses["loss"]

    # --------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def zero_shot_class_embeddings(self) -> Tensor:
        """Unit class embeddings ``K×E``: prompt embeddings averaged over the templates."""
        prompts = [t.format(c) for c in self.class_names for t in self.prompt_templates]
        tokens = self.tokenize(prompts)
        unk = self.tokenizer.unk_token_id
        if unk is not None and (tokens["input_ids"] == unk).any():
            rank_zero_warn("some zero-shot prompt words are unknown to the tokenizer ([UNK])")
        emb = self.encode_text(tokens["input_ids"], tokens["attention_mask"])
        emb = emb.view(len(self.class_names), len(self.prompt_templates), -1).mean(dim=1)
        return F.normalize(emb, dim=-1)

    def _eval_step(self, split: str, batch: ImageTextBatch) -> None:
        metrics = self.metrics[split]
        features, image_emb = self.encode_image(batch["image"])
        text_emb = self.encode_text(batch["input_ids"], batch["attention_mask"])
        metrics["retrieval"].update(image_emb, text_emb)
        b = len(image_emb)
        loss = contrastive_loss(image_emb, text_emb, self._logit_scale(), gather=False)
        self.log(f"{split}_contrastive_loss", loss, batch_size=b, sync_dist=True)
        if "location" in batch:
            location_emb = self.encode_location(batch["location"])
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
        self._eval_step("val", batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: ImageTextBatch, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: ImageTextBatch, batch_idx: int) -> dict[str, Tensor]:
        """Unit embeddings of the batch: ``image``, ``text`` and (when present) ``location``."""
        out = {"image": self.encode_image(batch["image"])[1]}
        if "input_ids" in batch:
            out["text"] = self.encode_text(batch["input_ids"], batch["attention_mask"])
        if "location" in batch:
            out["location"] = self.encode_location(batch["location"])
        return out
