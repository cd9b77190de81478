"""UPerNet semantic segmentation over a zoo image encoder: the FLAVARS SpaceNet1 protocol.

FLAVARS evaluates its image encoder on SpaceNet1 building segmentation with a UPerNet head (mIoU).
:class:`UPerNetSegmentation` builds that head (segmentation-models-pytorch's UPerNet decoder and
segmentation head) over any timm encoder that has ``forward_intermediates``, optionally loading
the encoder weights out of a checkpoint of any zoo model (:func:`load_encoder_checkpoint`), and
trains it frozen (a probe) or fine-tuned.

Multi-scale features: hierarchical encoders (ConvNeXt, ResNet, Swin ...) give their last four
stages (strides 4/8/16/32 for the usual models). A plain ViT has one stride, so four evenly
spaced blocks go through the simple feature pyramid of BEiT's UPerNet / ViTDet: 4x up by two
transposed convolutions, 2x up, identity and 2x max-pool (strides 4/8/16/32 for 16-pixel patches).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassJaccardIndex

from zoo.encoders.vision import create_timm_model
from zoo.io import read_state_dict
from zoo.models.base import OptimizerConfig, ZooTask

__all__ = [
    "CHECKPOINT_PREFIXES",
    "UPERNET_OPTIMIZER",
    "SimpleFeaturePyramid",
    "UPerNetSegmentation",
    "load_encoder_checkpoint",
]

#: Where the zoo's models keep their image encoder: FLAVARS (``VisionEncoder.model``; named
#: ``image_encoder`` in older checkpoints), then Aquila / FUSE / GeoPix (``vision``); a bare timm
#: state dict has no prefix.
CHECKPOINT_PREFIXES: tuple[str, ...] = (
    "encoders.vision_encoder.model.",
    "vision_encoder.model.",
    "image_encoder.model.",
    "vision.",
    "",
)

#: UPerNet's AdamW and schedule unless given (AdamW's usual betas, not CLIP's).
UPERNET_OPTIMIZER = OptimizerConfig(
    lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), warmup_fraction=0.05
)


def _candidates(key: str) -> tuple[str, ...]:
    """Names a plain timm model's ``key`` may have in a checkpoint: itself, timm's
    ``features_only`` list form (``stages.0.x`` -> ``stages_0.x``) or its getter form
    (``model.x``)."""
    parts = key.split(".", 2)
    names = [key, f"model.{key}"]
    if len(parts) >= 2:
        names.append("_".join(parts[:2]) + ("." + parts[2] if len(parts) == 3 else ""))
    return tuple(names)


def _resolve(state: Mapping[str, Tensor], prefix: str, key: str) -> str | None:
    return next((prefix + c for c in _candidates(key) if prefix + c in state), None)


def _prefixes_found(state: Mapping[str, Tensor], limit: int = 40) -> list[str]:
    found = sorted(
        {
            ".".join(k.split(".")[:2]) + "." if k.count(".") >= 2 else k.split(".")[0] + "."
            for k in state
        }
    )
    return found[:limit]


def load_encoder_checkpoint(
    encoder: nn.Module, checkpoint: str | Path, prefix: str | None = None
) -> str:
    """Load a timm encoder's weights out of a zoo checkpoint; returns the prefix used.

    Every tensor of ``encoder.state_dict()`` must be found (never silently random weights);
    checkpoint entries the encoder does not have (text encoder, heads, pruned layers) are ignored.

    Args:
        encoder: the timm model (already pruned to the layers it uses).
        checkpoint: Lightning ``.ckpt``, plain state-dict file or ``.safetensors``.
        prefix: where the encoder lives in the checkpoint, e.g. ``"vision_encoder.model."``
            (FLAVARS) or ``"vision."`` (Aquila, FUSE, GeoPix); ``None`` tries
            :data:`CHECKPOINT_PREFIXES` in order. ``features_only`` key names (Aquila's
            ``stages_0.`` for ``stages.0.``) are mapped to the plain model's.
    """
    state = read_state_dict(checkpoint, "vision_checkpoint")
    wanted = encoder.state_dict()
    if prefix is None:
        prefix = next(
            (p for p in CHECKPOINT_PREFIXES if any(_resolve(state, p, k) for k in wanted)), None
        )
        if prefix is None:
            raise ValueError(
                f"no weights of the image encoder found in {checkpoint} under any of the "
                f"prefixes {list(CHECKPOINT_PREFIXES)}; the checkpoint's prefixes are "
                f"{_prefixes_found(state)}: set checkpoint_prefix"
            )
    elif prefix and not prefix.endswith("."):
        prefix += "."
    mapped, missing, mismatched = {}, [], []
    for key, value in wanted.items():
        source = _resolve(state, prefix, key)
        if source is None:
            missing.append(key)
        elif state[source].shape != value.shape:
            mismatched.append(f"{source}: {tuple(state[source].shape)} vs {tuple(value.shape)}")
        else:
            mapped[key] = state[source]
    if len(missing) == len(wanted):
        raise ValueError(
            f"no weights of the image encoder found in {checkpoint} under prefix {prefix!r}; "
            f"the checkpoint's prefixes are {_prefixes_found(state)}"
        )
    if missing:
        raise ValueError(
            f"{checkpoint} (prefix {prefix!r}) lacks {len(missing)} of the encoder's "
            f"{len(wanted)} tensors, e.g. {missing[:5]}: a different architecture, or an encoder "
            "truncated to fewer stages (Aquila keeps only its feature_stages: set feature_indices "
            "to those)"
        )
    if mismatched:
        raise ValueError(
            f"{checkpoint} (prefix {prefix!r}) has tensors of other shapes than the encoder "
            f"(checkpoint vs encoder), e.g. {mismatched[:5]}: check vision_encoder, image_size "
            "and in_chans"
        )
    encoder.load_state_dict(mapped, strict=True)
    return prefix


class SimpleFeaturePyramid(nn.Module):
    """Four maps of one stride -> strides ×1/4, ×1/2, ×1, ×2 (BEiT's UPerNet neck, ViTDet).

    Args:
        dim: channels of the maps (kept).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
            nn.BatchNorm2d(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(dim, dim, 2, stride=2)
        self.down2 = nn.MaxPool2d(2)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """``features``: four ``B×dim×h×w`` maps, shallow to deep."""
        first, second, third, fourth = features
        return [self.up4(first), self.up2(second), third, self.down2(fourth)]


def _class_key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())


class UPerNetSegmentation(ZooTask):
    """UPerNet semantic segmentation over a (frozen or fine-tuned) zoo image encoder.

    Reads ``image`` (normalized ``B×C×H×W``) and ``semantic_mask`` (long ``B×H×W``, class per
    pixel, 0 = background) and trains with pixel cross-entropy. Logs ``train_loss``,
    ``val_loss``, ``val_miou``, ``val_iou_<class>``, ``test_miou`` and ``test_iou_<class>``:
    torchmetrics' macro ``MulticlassJaccardIndex`` over all classes including background (as
    mmsegmentation reports mIoU; a class absent from both prediction and target is left out).

    Args:
        vision_encoder: timm name (``hf-hub:org/model`` or a local folder too) of an encoder with
            ``forward_intermediates``: ``zoo_vit_tiny`` (the FLAVARS default), ``zoo_convnext_tiny``
            (Aquila's), ``vit_base_patch16_224`` ...
        image_size: input size in pixels (transformer position embeddings follow it).
        in_chans: input bands.
        vision_pretrained: load the encoder's named timm weights.
        vision_checkpoint: encoder weights from a zoo checkpoint: a Lightning ``.ckpt`` of any zoo
            model, a plain state-dict file or a ``.safetensors`` export.
        checkpoint_prefix: where the encoder lives in ``vision_checkpoint``; ``None`` detects
            ``vision_encoder.model.`` (FLAVARS), ``vision.`` (Aquila, FUSE, GeoPix) or none.
        feature_indices: the four (at least two) blocks or stages that feed the decoder; ``None``:
            the last four stages of a hierarchical encoder, four evenly spaced blocks of a ViT.
        freeze_encoder: keep the encoder frozen (eval mode, no gradients, not optimized).
        num_classes: classes including background (2 for SpaceNet1 buildings).
        class_names: names of the classes for the per-class IoU keys; default ``background``,
            ``class_1``, ...
        ignore_index: target value left out of the loss and the metrics.
        decoder_channels: width of the UPerNet decoder.
        optimizer: AdamW and its warm-up + cosine schedule (:data:`UPERNET_OPTIMIZER`).
        encoder: a ready encoder with timm's ``feature_info``, ``forward_intermediates`` and
            ``prune_intermediate_layers`` (a model's :meth:`dense_encoder`, e.g. FLAVA's image
            encoder): used instead of building ``vision_encoder``; not a hyper-parameter.
    """

    def __init__(
        self,
        vision_encoder: str = "zoo_vit_tiny",
        image_size: int = 64,
        in_chans: int = 3,
        vision_pretrained: bool = False,
        vision_checkpoint: str | None = None,
        checkpoint_prefix: str | None = None,
        feature_indices: list[int] | None = None,
        freeze_encoder: bool = True,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        ignore_index: int | None = None,
        decoder_channels: int = 256,
        optimizer: OptimizerConfig = UPERNET_OPTIMIZER,
        encoder: nn.Module | None = None,
    ) -> None:
        super().__init__(optimizer)
        self.save_hyperparameters(ignore=["encoder"])
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
        names = (
            list(class_names)
            if class_names is not None
            else (["background"] + [f"class_{i}" for i in range(1, num_classes)])
        )
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names for num_classes={num_classes}")
        self.class_names = names
        self.ignore_index = ignore_index
        self.freeze_encoder = freeze_encoder

        if encoder is not None and vision_checkpoint is not None:
            raise ValueError("give either encoder (ready weights) or vision_checkpoint, not both")
        name = vision_encoder if encoder is None else type(encoder).__name__
        if encoder is None:
            encoder = self._build_encoder(vision_encoder, image_size, in_chans, vision_pretrained)
        self.encoder = self._check_encoder(encoder, name)
        self.feature_indices = self._select_indices(feature_indices)
        self.checkpoint_prefix: str | None = None
        if vision_checkpoint is not None:
            self.checkpoint_prefix = load_encoder_checkpoint(
                self.encoder, vision_checkpoint, checkpoint_prefix
            )
        with torch.no_grad():
            training = self.encoder.training
            probe = self.encoder.eval().forward_intermediates(
                torch.zeros(1, in_chans, image_size, image_size),
                indices=self.feature_indices,
                output_fmt="NCHW",
                intermediates_only=True,
            )
            self.encoder.train(training)
        sizes = {tuple(f.shape[-2:]) for f in probe}
        if len(sizes) == 1:  # one stride: a plain ViT
            if len(probe) != 4:
                raise ValueError(
                    f"a single-stride encoder needs four feature_indices for the simple feature "
                    f"pyramid, got {self.feature_indices}"
                )
            self.neck: nn.Module = SimpleFeaturePyramid(probe[0].shape[1])
        else:
            self.neck = nn.Identity()
        channels = [f.shape[1] for f in probe]
        # smp's decoder skips the two highest-resolution (1/1, 1/2) entries of an smp encoder.
        self.decoder = UPerNetDecoder(
            encoder_channels=[in_chans, 0, *channels],
            encoder_depth=len(channels) + 1,
            decoder_channels=decoder_channels,
        )
        self.head = SegmentationHead(decoder_channels, num_classes, kernel_size=1)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

        metrics = MetricCollection(
            {
                "miou": MulticlassJaccardIndex(
                    num_classes, average="macro", ignore_index=ignore_index
                ),
                "iou": MulticlassJaccardIndex(
                    num_classes, average="none", ignore_index=ignore_index
                ),
            }
        )
        self.val_metrics = metrics.clone(prefix="val_")
        self.test_metrics = metrics.clone(prefix="test_")

    # ----------------------------------------------------------------------------- building
    @staticmethod
    def _build_encoder(name: str, image_size: int, in_chans: int, pretrained: bool) -> nn.Module:
        kwargs: dict[str, Any] = {"num_classes": 0, "in_chans": in_chans}
        try:  # transformers take the input size; convolutional backbones refuse the argument
            model = create_timm_model(name, pretrained, img_size=image_size, **kwargs)
        except TypeError:
            model = create_timm_model(name, pretrained, **kwargs)
        return model

    @staticmethod
    def _check_encoder(model: nn.Module, name: str) -> nn.Module:
        needed = ("forward_intermediates", "prune_intermediate_layers")
        if not all(hasattr(model, attribute) for attribute in needed):
            raise ValueError(
                f"image encoder {name!r} has no forward_intermediates in timm: pick a model that "
                "does (ViT, ConvNeXt, ResNet, Swin ...)"
            )
        return model

    def _select_indices(self, feature_indices: list[int] | None) -> list[int]:
        """Pick the feature levels and prune the encoder's unused blocks, final norm and head."""
        info = getattr(self.encoder, "feature_info", None)
        if feature_indices is None:
            if not info:
                raise ValueError("the image encoder has no feature_info: set feature_indices")
            n = len(info)
            if len({f["reduction"] for f in info}) == 1:  # plain ViT: four evenly spaced blocks
                feature_indices = sorted({max(0, round((i + 1) * n / 4) - 1) for i in range(4)})
            else:
                feature_indices = list(range(max(0, n - 4), n))
        if len(feature_indices) < 2:
            raise ValueError(f"UPerNet needs at least two feature levels, got {feature_indices}")
        taken = self.encoder.prune_intermediate_layers(
            list(feature_indices), prune_norm=True, prune_head=True
        )
        return [int(i) for i in taken]

    # ----------------------------------------------------------------------------- model
    def train(self, mode: bool = True) -> UPerNetSegmentation:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # frozen: no dropout, fixed batch-norm statistics
        return self

    def features(self, image: Tensor) -> list[Tensor]:
        """The encoder's multi-scale maps ``B×C_i×H_i×W_i`` (before the neck)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            return self.encoder.forward_intermediates(
                image, indices=self.feature_indices, output_fmt="NCHW", intermediates_only=True
            )

    def forward(self, image: Tensor) -> Tensor:
        """Class logits ``B×num_classes×H×W`` at the input size."""
        levels = self.neck(self.features(image))
        decoded = self.decoder([image, image, *levels])  # the first two entries are skipped
        logits = self.head(decoded)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    # ----------------------------------------------------------------------------- steps
    def _target(self, batch: Mapping[str, Any]) -> Tensor:
        if "semantic_mask" not in batch:
            raise KeyError(
                "UPerNetSegmentation needs batch['semantic_mask'] (long B×H×W class per pixel); "
                f"the batch has {sorted(batch)}"
            )
        target, image = batch["semantic_mask"], batch["image"]
        if target.shape != (image.shape[0], *image.shape[-2:]):
            raise ValueError(
                f"semantic_mask must have shape B×H×W = {(image.shape[0], *image.shape[-2:])}, "
                f"got {tuple(target.shape)}"
            )
        return target.long()

    def _loss(self, logits: Tensor, target: Tensor) -> Tensor:
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return F.cross_entropy(logits, target, ignore_index=ignore)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        target = self._target(batch)
        loss = self._loss(self(batch["image"]), target)
        self.log("train_loss", loss, prog_bar=True, batch_size=len(target))
        return loss

    def _eval_step(self, batch: dict[str, Any], split: str) -> None:
        target = self._target(batch)
        logits = self(batch["image"])
        self.log(
            f"{split}_loss", self._loss(logits, target), batch_size=len(target), sync_dist=True
        )
        getattr(self, f"{split}_metrics").update(logits.argmax(dim=1), target)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Predicted class per pixel, long ``B×H×W``."""
        return self(batch["image"]).argmax(dim=1)

    def _log_metrics(self, split: str) -> None:
        metrics = getattr(self, f"{split}_metrics")
        values = metrics.compute()
        per_class = values.pop(f"{split}_iou")
        names = [f"{split}_iou_{_class_key(name)}" for name in self.class_names]
        values |= dict(zip(names, per_class, strict=True))
        self.log_dict(values)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")
