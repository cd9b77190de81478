"""FLAVARS' pretraining objectives: their settings, the masked pass's random draw and the
losses read from one masked pass of an encoder set (see :mod:`zoo.models.flavars`).

Losses, each weighted and switched off by a weight of 0 (``loss_weights``), and the pass each
one reads, as in FLAVA (``FlavaForPreTraining``):

* ``contrastive``: global image-text InfoNCE on the **unmasked** pair ([CLS] -> projection);
* ``location``: image-location InfoNCE, the same form, unmasked image (the paper's "+LE");
* ``mim``: unimodal masked image modelling on the **masked image** pass: BEiT block masks
  (``mim_masking``), the DALL-E codebook's codes as targets when ``flava.codebook`` is given
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

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F
from transformers import PreTrainedTokenizerBase

from zoo.encoders.encoder_set import EncoderSet
from zoo.encoders.flava import ImageCodebook
from zoo.groups import as_group
from zoo.losses.contrastive import MAX_LOGIT_SCALE
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

__all__ = [
    "LOSSES",
    "MASKED_LOSSES",
    "LossWeights",
    "MaskingDraw",
    "Objectives",
    "draw_masks",
    "masked_losses",
]

LOSSES = ("mim", "mlm", "itm", "mmm_image", "mmm_text", "contrastive", "location")
#: The losses that read the masked pass.
MASKED_LOSSES = ("mim", "mlm", "itm", "mmm_image", "mmm_text")


@dataclass(frozen=True)
class LossWeights:
    """The weight of each FLAVARS loss; 0 switches it off (YAML:
    ``objectives: {loss_weights: {location: 0}}``, keys left out keep 1).

    Args:
        mim: unimodal masked image modelling.
        mlm: unimodal masked language modelling.
        itm: image-text matching.
        mmm_image: masked multimodal modelling, image half (the masked patches from fused states).
        mmm_text: masked multimodal modelling, text half (the masked tokens from fused states).
        contrastive: image-text contrastive.
        location: image-location contrastive (the paper's "+LE" ablation).

    Raises:
        ValueError: a negative weight.
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


@dataclass(frozen=True)
class Objectives:
    """FLAVARS' pretraining objectives: which losses, and how the masked pass is drawn.

    Args:
        loss_weights: the weight of each loss (0 switches it off).
        mim_mask_ratio: fraction of patches masked for image modelling (FLAVA: 75/196).
        mim_masking: ``block`` (BEiT's block-wise masks, FLAVA's) or ``random`` patches.
        mlm_probability: fraction of text tokens masked for language modelling.
        itm_negatives: ``hard`` (by logit-scaled similarity, ALBEF) or ``random`` (uniform,
            FLAVA's).
        itm_negative_probability: under ``itm_layout: flava``, the chance a caption is replaced
            by a negative (FLAVA: 0.5).
        itm_layout: the rows fused for ITM and MMM. ``flava``: B rows as FLAVA, positives and
            negatives together (each image keeps its caption or gets a negative one): one
            fusion pass over B sequences, MMM on about half of them (the kept pairs).
            ``albef``: 3B rows (B positives, B negative texts, B negative images, ALBEF's):
            three times the fusion's and the MMM heads' work (a step 1.6 times as long at the
            CPU benchmark's dimensions), for 2B negatives both ways and MMM on all B positives.
        temperature: initial contrastive temperature (logit scale ln(1/T), clamped at ln 100;
            FLAVA's encoders keep their own image-text scale).

    Raises:
        ValueError: a choice or probability out of its range.
    """

    loss_weights: LossWeights = field(default_factory=LossWeights)
    mim_mask_ratio: float = 0.4
    mim_masking: Literal["block", "random"] = "block"
    mlm_probability: float = 0.15
    itm_negatives: Literal["hard", "random"] = "hard"
    itm_negative_probability: float = 0.5
    itm_layout: Literal["flava", "albef"] = "flava"
    temperature: float = 0.07

    def __post_init__(self) -> None:
        if isinstance(self.loss_weights, dict):  # as stored in a checkpoint's hyper-parameters
            object.__setattr__(self, "loss_weights", LossWeights(**self.loss_weights))
        if self.mim_masking not in ("block", "random"):
            raise ValueError(f"mim_masking must be 'block' or 'random', got {self.mim_masking!r}")
        if self.itm_negatives not in ("hard", "random"):
            raise ValueError(
                f"itm_negatives must be 'hard' or 'random', got {self.itm_negatives!r}"
            )
        if self.itm_layout not in ("flava", "albef"):
            raise ValueError(f"itm_layout must be 'flava' or 'albef', got {self.itm_layout!r}")
        if not 0.0 <= self.itm_negative_probability <= 1.0:
            raise ValueError(
                f"itm_negative_probability must be in [0, 1], got {self.itm_negative_probability}"
            )

    @property
    def weights(self) -> dict[str, float]:
        """Each loss's weight by name."""
        return {name: getattr(self.loss_weights, name) for name in LOSSES}

    @classmethod
    def of(cls, value: Objectives | dict[str, Any] | None) -> Objectives:
        """The objectives from themselves, a dict (a checkpoint's hyper-parameters) or None.

        Args:
            value: the objectives, their fields as a dict, or None (the defaults).

        Returns:
            The objectives.
        """
        return as_group(cls, value, "objectives")


@dataclass
class MaskingDraw:
    """The random choices of one step's masked pass (drawn by :func:`draw_masks`, or given,
    e.g. to compare with ``FlavaForPreTraining`` on the same choices).

    Args:
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


def draw_masks(
    objectives: Objectives,
    tokenizer: PreTrainedTokenizerBase,
    grid_size: tuple[int, int],
    input_ids: Tensor,
    attention_mask: Tensor,
    image_emb: Tensor,
    text_emb: Tensor,
    logit_scale: Tensor,
) -> MaskingDraw:
    """The masked pass's random choices: patches, tokens and the matching pairs.

    Args:
        objectives: the masking and matching settings.
        tokenizer: the data's tokenizer (its special and mask tokens).
        grid_size: the image encoder's patch grid.
        input_ids: ``B×T`` the batch's token ids.
        attention_mask: ``B×T`` their attention mask.
        image_emb: ``B×E`` the unmasked pass's image embeddings (hard negatives).
        text_emb: ``B×E`` its text embeddings.
        logit_scale: the image-text logit scale (its log).

    Returns:
        The draw.
    """
    ids, mask = input_ids, attention_mask
    b, device = len(ids), ids.device
    ratio = objectives.mim_mask_ratio
    if objectives.mim_masking == "block":
        patches = block_patch_mask(b, grid_size, ratio, device=device)
    else:
        patches = random_patch_mask(b, grid_size[0] * grid_size[1], ratio, device)
    special = mask == 0
    for token in tokenizer.all_special_ids:  # a few ids: no table copied to the device
        special = special | (ids == token)
    masked_ids, labels = mask_text_tokens(
        ids, special, tokenizer.mask_token_id, len(tokenizer), objectives.mlm_probability
    )
    with torch.no_grad():
        duplicate = (ids[:, None, :] == ids[None, :, :]).all(-1)
        hard = objectives.itm_negatives == "hard"
        sim = F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T if hard else None
        scale = logit_scale.detach().clamp(max=MAX_LOGIT_SCALE).exp()
        negative_text, negative_image = sample_negatives(duplicate, sim, scale)
    if objectives.itm_layout == "flava":
        text_index, target = mix_negative_pairs(negative_text, objectives.itm_negative_probability)
        return MaskingDraw(patches, masked_ids, labels, None, text_index, target)
    rows = torch.arange(b, device=device)  # ALBEF's: positives, negative texts, negative images
    image_index = torch.cat([rows, rows, negative_image])
    text_index = torch.cat([rows, negative_text, rows])
    target = (torch.arange(3 * b, device=device) < b).long()
    return MaskingDraw(patches, masked_ids, labels, image_index, text_index, target)


def _image_loss(
    prediction: Tensor, targets: Tensor, patches: Tensor, codebook: ImageCodebook | None
) -> Tensor:
    """Codebook cross-entropy (``B×N`` codes) or pixel MSE (``B×N×P`` targets) on ``patches``."""
    if codebook is not None:
        return masked_token_loss(prediction, targets, patches)
    return masked_pixel_loss(prediction, targets, patches)


def masked_losses(
    encoders: EncoderSet,
    codebook: ImageCodebook | None,
    weights: dict[str, float],
    image: Tensor,
    attention_mask: Tensor,
    draw: MaskingDraw,
) -> dict[str, Tensor]:
    """MIM, MLM, ITM and MMM from one masked pass of each encoder (see the module docstring).

    Args:
        encoders: the encoder set.
        codebook: the MIM target's codebook, or None for normalized pixels.
        weights: each loss's weight (a loss of weight 0 is not computed).
        image: ``B×C×H×W`` normalized pixels.
        attention_mask: ``B×T`` the captions' attention mask.
        draw: the masked pass's random choices.

    Returns:
        The enabled masked losses by name (unweighted).
    """
    w, mask = weights, attention_mask
    losses: dict[str, Tensor] = {}
    img = encoders.image(image, draw.patches)
    txt = encoders.text(draw.input_ids, mask)
    # B×N codebook codes, or B×N×P pixel targets: made once, for MIM and MMM alike.
    targets = (
        codebook(image, encoders.grid_size)
        if codebook is not None
        else pixel_targets(image, encoders.patch_size)
    )
    if w["mim"]:
        losses["mim"] = _image_loss(encoders.mim_head(img.patches), targets, draw.patches, codebook)
    if w["mlm"]:
        losses["mlm"] = token_loss(encoders.mlm_head(txt.states), draw.mlm_labels)
    if not (w["itm"] or w["mmm_image"] or w["mmm_text"]):
        return losses
    # Project each pass's B rows, then index the pairs (never project gathered copies).
    image_tokens, text_tokens = encoders.project(img.fusion_input, txt.fusion_input)
    patches = draw.patches
    if draw.image_index is not None:
        image_tokens, patches = image_tokens[draw.image_index], patches[draw.image_index]
        targets = targets[draw.image_index]
    fused = encoders.fuse(image_tokens, text_tokens[draw.text_index], mask[draw.text_index])
    if w["itm"]:
        losses["itm"] = F.cross_entropy(encoders.itm_logits(fused.states).float(), draw.itm_target)
    # MMM on the positive pairs (all of them when the batch drew none, as FLAVA).
    positive = draw.itm_target == 1
    positive = positive | ~positive.any()
    if w["mmm_image"]:
        prediction = encoders.mmm_image_head(fused.patches)
        losses["mmm_image"] = _image_loss(
            prediction, targets, patches & positive[:, None], codebook
        )
    if w["mmm_text"]:
        labels = draw.mlm_labels[draw.text_index].masked_fill(~positive[:, None], -100)
        losses["mmm_text"] = token_loss(encoders.mmm_text_head(fused.text), labels)
    return losses
