"""FLAVARS: FLAVA-style pretraining of image, text and location encoders (arXiv 2501.08490).

One image encoder (a ViT by default), one text encoder, a multimodal fusion transformer over
both token sequences, and a SatCLIP location encoder (spherical harmonics + SIREN), trained
with five losses, each weighted and switchable off by a weight of 0:

* masked image modelling: masked patches, pixel targets (no FLAVA codebook can be fetched);
* masked language modelling: BERT's 15 % masking;
* image-text matching on the fusion [CLS], negatives drawn from the batch by similarity;
* global image-text contrastive, with a learnable temperature, over the global batch;
* image-location contrastive, the same form (the paper's "+LE" ablation is this weight).

Contrastive and matching losses use the unmasked inputs; the masked-modelling losses run a
second pass over masked inputs, as FLAVA does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy
from transformers import PreTrainedTokenizerBase

from zoo.data.batch import ImageTextBatch
from zoo.encoders.location import LocationEncoder
from zoo.encoders.text import TextEncoder
from zoo.encoders.vision import VisionEncoder
from zoo.layers.attention import dense_attention_mask
from zoo.losses.contrastive import contrastive_loss, init_logit_scale
from zoo.losses.masked import mask_text_tokens, masked_pixel_loss, random_patch_mask
from zoo.losses.matching import sample_hard_negatives
from zoo.metrics import CrossModalRetrieval, KNNAccuracy, LocationRetrievalError, zero_shot_logits
from zoo.models.base import OptimizerConfig, ZooTask

__all__ = ["FLAVARS", "LossWeights", "FusionEncoder"]

LOSSES = ("mim", "mlm", "itm", "contrastive", "location")


@dataclass(frozen=True)
class LossWeights:
    """The weight of each FLAVARS loss; 0 switches it off (YAML: ``loss_weights: {location: 0}``,
    keys left out keep 1).

    Attributes:
        mim: masked image modelling.
        mlm: masked language modelling.
        itm: image-text matching.
        contrastive: image-text contrastive.
        location: image-location contrastive (the paper's "+LE" ablation).
    """

    mim: float = 1.0
    mlm: float = 1.0
    itm: float = 1.0
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


class FusionEncoder(nn.Module):
    """FLAVA's multimodal encoder: a transformer over [CLS] + image tokens + text tokens."""

    def __init__(self, image_width: int, text_width: int, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.image_in = nn.Linear(image_width, width)
        self.text_in = nn.Linear(text_width, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.modality_token = nn.Parameter(torch.zeros(2, width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.modality_token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)

    def forward(self, image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor) -> Tensor:
        """Returns the fused [CLS] state ``B×width``; ``text_mask`` is 1 on real tokens."""
        b, n = image_tokens.shape[:2]
        x = torch.cat(
            [
                self.cls_token.expand(b, -1, -1),
                self.image_in(image_tokens) + self.modality_token[0],
                self.text_in(text_tokens) + self.modality_token[1],
            ],
            dim=1,
        )
        pad = torch.cat([text_mask.new_ones(b, 1 + n), text_mask], dim=1) == 0
        return self.norm(self.encoder(x, src_key_padding_mask=pad)[:, 0])


class FLAVARS(ZooTask):
    """FLAVA-style image-text-location pretraining.

    Args:
        vision_encoder: timm name, ``hf-hub:org/model`` or local folder (a ViT in the paper).
        vision_pretrained: load the vision encoder's named weights.
        vision_checkpoint: a local weight file for the vision encoder.
        image_size: input size in pixels (linked from the data).
        text_encoder: ``tiny``/``mini`` (random BERT) or a Hugging Face id / local folder.
        text_pretrained: load the text encoder's weights when it is named.
        embed_dim: width of the shared image-text-location embedding space.
        fusion_width: width of the multimodal fusion encoder.
        fusion_layers: depth of the multimodal fusion encoder.
        fusion_heads: attention heads of the multimodal fusion encoder.
        legendre_polys: spherical-harmonic degree L of the location encoder (10 or 40).
        location_hidden: SIREN hidden width.
        location_layers: SIREN hidden layers.
        location_checkpoint: a SatCLIP checkpoint to initialise the location encoder from.
        loss_weights: the weight of each loss (0 switches it off).
        mim_mask_ratio: fraction of patches masked for image modelling.
        mlm_probability: fraction of text tokens masked for language modelling.
        temperature: initial contrastive temperature (logit scale ln(1/T), clamped at ln 100).
        knn_k: neighbours of the frozen-feature k-NN evaluation.
        prompt_templates: zero-shot prompts; ``{}`` is replaced by the class name.
        class_names: scene classes for zero-shot evaluation (linked from the data).
        tokenizer: the data's tokenizer (linked from the data).
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
        mlm_probability: float = 0.15,
        temperature: float = 0.07,
        knn_k: int = 20,
        prompt_templates: list[str] | None = None,
        class_names: list[str] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
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
        self.tokenizer = tokenizer
        self.class_names = list(class_names or [])
        self.prompt_templates = list(prompt_templates or ["a satellite image of a {}."])
        self.weights = {name: getattr(loss_weights, name) for name in LOSSES}

        self.vision_encoder = VisionEncoder(
            vision_encoder, image_size, vision_pretrained, vision_checkpoint
        )
        self.text_encoder = TextEncoder(text_encoder, len(tokenizer), pretrained=text_pretrained)
        if location_checkpoint is not None:
            self.location_encoder = LocationEncoder.from_satclip_checkpoint(location_checkpoint, max_latitude=89.95)
        else:
            self.location_encoder = LocationEncoder(
                legendre_polys=legendre_polys, dim_hidden=location_hidden,
                num_layers=location_layers, dim_out=embed_dim, max_latitude=89.95,
            )
        vw, tw = self.vision_encoder.width, self.text_encoder.width
        self.image_projection = nn.Linear(vw, embed_dim)
        self.text_projection = nn.Linear(tw, embed_dim)
        self.location_projection = nn.Linear(self.location_encoder.nnet.last_layer.weight.shape[0], embed_dim)
        self.logit_scale = init_logit_scale(temperature)
        self.location_logit_scale = init_logit_scale(temperature)
        self.fusion = FusionEncoder(vw, tw, fusion_width, fusion_layers, fusion_heads)
        self.itm_head = nn.Linear(fusion_width, 2)
        self.mlm_head = nn.Sequential(
            nn.Linear(tw, tw), nn.GELU(), nn.LayerNorm(tw), nn.Linear(tw, len(tokenizer))
        )
        ph, pw = self.vision_encoder.patch_size
        self.mim_head = nn.Linear(vw, ph * pw * 3)
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

    # ----------------------------------------------------------------------------- encoders
    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled backbone features ``B×D_v``, unit image embedding ``B×E``)."""
        pooled = self.vision_encoder(image).pooled
        return pooled, F.normalize(self.image_projection(pooled), dim=-1)

    def image_features(self, image: Tensor) -> Tensor:
        """Pooled backbone features ``B×D_v`` (frozen-feature evaluation)."""
        return self.vision_encoder(image).pooled

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Unit text embeddings ``B×E`` from the [CLS] state."""
        hidden = self._text_states(input_ids, attention_mask)
        return F.normalize(self.text_projection(hidden[:, 0]), dim=-1)

    def _text_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The text encoder's ``B×T×D`` states, given the 4-D attention mask built here: with the
        ``B×T`` one, Hugging Face checks ``mask.all()`` on the host at every step."""
        config = self.text_encoder.model.config
        mask = dense_attention_mask(
            attention_mask, config._attn_implementation, causal=False,
            dtype=self.text_encoder.model.dtype,
        )
        return self.text_encoder(input_ids, mask)

    def encode_location(self, location: Tensor) -> Tensor:
        """Unit location embeddings ``B×E`` from (lat, lon) in degrees."""
        features = self.location_encoder(location.double()).to(self.location_projection.weight.dtype)
        return F.normalize(self.location_projection(features), dim=-1)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        tokens = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    # ----------------------------------------------------------------------------- training
    def compute_losses(self, batch: ImageTextBatch) -> dict[str, Tensor]:
        """All enabled losses of one batch (unweighted) and their weighted sum under 'loss'."""
        image, ids, mask = batch["image"], batch["input_ids"], batch["attention_mask"]
        w = self.weights
        losses: dict[str, Tensor] = {}
        vision = self.vision_encoder(image)
        text = self._text_states(ids, mask)
        image_emb = self.image_projection(vision.pooled)
        text_emb = self.text_projection(text[:, 0])
        if w["contrastive"]:
            losses["contrastive"] = contrastive_loss(image_emb, text_emb, self.logit_scale)
        if w["location"] and self._has_location(batch):
            location_emb = self.location_projection(
                self.location_encoder(batch["location"].double()).to(image_emb.dtype)
            )
            losses["location"] = contrastive_loss(image_emb, location_emb, self.location_logit_scale)
        if w["itm"]:
            losses["itm"] = self._matching_loss(vision.tokens, text, mask, image_emb, text_emb, ids)
        if w["mim"]:
            patches = random_patch_mask(
                len(image), self.vision_encoder.num_patches, self.hparams.mim_mask_ratio, image.device
            )
            masked = self.vision_encoder(image, patches).tokens
            losses["mim"] = masked_pixel_loss(
                self.mim_head(masked), image, patches, self.vision_encoder.patch_size
            )
        if w["mlm"]:
            losses["mlm"] = self._language_loss(ids, mask)
        losses["loss"] = sum(w[name] * value for name, value in losses.items())
        return losses

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

    def _matching_loss(
        self, image_tokens: Tensor, text: Tensor, mask: Tensor, image_emb: Tensor,
        text_emb: Tensor, ids: Tensor,
    ) -> Tensor:
        """ITM over B positives, B hard-negative texts and B hard-negative images."""
        b = len(ids)
        with torch.no_grad():
            sim = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
            duplicate = (ids[:, None, :] == ids[None, :, :]).all(-1)
            negative_text = sample_hard_negatives(sim, duplicate)
            negative_image = sample_hard_negatives(sim.T, duplicate)
        rows = torch.arange(b, device=ids.device)
        image_index = torch.cat([rows, rows, negative_image])
        text_index = torch.cat([rows, negative_text, rows])
        fused = self.fusion(image_tokens[image_index], text[text_index], mask[text_index])
        target = torch.cat([torch.ones_like(rows), torch.zeros_like(rows), torch.zeros_like(rows)])
        return F.cross_entropy(self.itm_head(fused), target)

    def _language_loss(self, ids: Tensor, mask: Tensor) -> Tensor:
        special = mask == 0
        for token in self.tokenizer.all_special_ids:  # a few ids: no table copied to the device
            special = special | (ids == token)
        masked_ids, labels = mask_text_tokens(
            ids, special, self.tokenizer.mask_token_id, len(self.tokenizer),
            self.hparams.mlm_probability,
        )
        hidden = self._text_states(masked_ids, mask)
        # Every position through the head, the unpicked ignored: selecting the picked ones would
        # give a shape only the device knows (a host synchronisation every step).
        logits = self.mlm_head(hidden).flatten(0, 1).float()
        return F.cross_entropy(logits, labels.flatten(), ignore_index=-100)

    def training_step(self, batch: ImageTextBatch, batch_idx: int) -> Tensor:
        losses = self.compute_losses(batch)
        b = len(batch["image"])
        self.log_dict({f"train_{k}_loss": v for k, v in losses.items() if k != "loss"}, batch_size=b)
        self.log("train_loss", losses["loss"], batch_size=b, prog_bar=True)
        self.log("logit_scale", self.logit_scale.exp(), batch_size=b)
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
        loss = contrastive_loss(image_emb, text_emb, self.logit_scale, gather=False)
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

