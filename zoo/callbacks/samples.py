"""Log samples to W&B (and TensorBoard): retrievals (FLAVARS), answers (the generators), masks
(GeoPix)."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

__all__ = ["GenerationSamples", "RetrievalSamples"]


class RetrievalSamples(Callback):
    """After each validation, show ``num_images`` validation images with their top captions.

    The captions are ranked among the captions of the first validation batch, by the model's
    ``encode_image`` / ``encode_text``; the true caption is marked with ``*``.

    Args:
        num_images: images to show.
        top_k: captions listed per image.
    """

    def __init__(self, num_images: int = 4, top_k: int = 3) -> None:
        self.num_images = num_images
        self.top_k = top_k

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not all(hasattr(pl_module, f) for f in ("encode_image", "encode_text")):
            return
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list) else loaders
        batch = next(iter(loader))
        batch = (
            trainer.datamodule.on_after_batch_transfer(
                pl_module.transfer_batch_to_device(batch, pl_module.device, 0), 0
            )
            if trainer.datamodule is not None
            else batch
        )
        n = min(self.num_images, len(batch["image"]))
        image_emb = pl_module.encode_image(batch["image"])
        text_emb = pl_module.encode_text(batch["input_ids"], batch["attention_mask"])
        top = (image_emb[:n] @ text_emb.T).topk(min(self.top_k, len(text_emb)), dim=1).indices
        captions = []
        for i in range(n):
            lines = [("* " if int(j) == i else "  ") + batch["caption"][int(j)] for j in top[i]]
            captions.append("\n".join(lines))
        images = _to_uint8(batch["image"][:n])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(
                    "val_retrievals",
                    [im.permute(1, 2, 0).numpy() for im in images],
                    step=trainer.global_step,
                    caption=captions,
                )
            elif isinstance(logger, TensorBoardLogger):
                for i, (im, text) in enumerate(zip(images, captions, strict=True)):
                    logger.experiment.add_image(f"val_retrievals/{i}", im, trainer.global_step)
                    logger.experiment.add_text(f"val_retrievals/{i}", text, trainer.global_step)


class GenerationSamples(Callback):
    """After each validation, log a table of ``num_images`` validation images with the question,
    the generated answer and the reference; for a model with masks (GeoPix) also the images
    with the masks decoded from the reference phrases overlaid (``val_masks``).

    Args:
        num_images: images to show.
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from zoo.models.capabilities import Generation, Masks

        wandb = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if trainer.sanity_checking or not trainer.is_global_zero or not wandb:
            return
        if not isinstance(pl_module, Generation):
            return
        loaders = trainer.val_dataloaders
        batch = next(iter(loaders[0] if isinstance(loaders, list) else loaders))
        batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
        if trainer.datamodule is not None:
            batch = trainer.datamodule.on_after_batch_transfer(batch, 0)
        n = min(self.num_images, len(batch["image"]))
        location = batch.get("location")  # a generator with a location token reads it
        answers = pl_module.generate(
            batch["image"][:n],
            batch["prompt_ids"][:n],
            batch["prompt_attention_mask"][:n],
            **({} if location is None else {"location": location[:n]}),
        )
        images = _to_uint8(batch["image"][:n])
        rows = [
            [_wandb_image(im), q, a, r]
            for im, q, a, r in zip(
                images, batch["question"], answers, batch["reference"], strict=False
            )
        ]
        for logger in wandb:
            logger.log_table(
                "val_answers",
                ["image", "question", "answer", "reference"],
                rows,
                step=trainer.global_step,
            )
        if isinstance(pl_module, Masks) and "target_index" in batch:
            category = batch["category"].flatten()[batch["target_index"]]
            _, logits, owner = pl_module.forward_with_masks(
                batch, batch["input_ids"], batch["attention_mask"], None, category
            )
            overlays = [_overlay(images[b], logits[owner == b] > 0) for b in range(n)]
            captions = ["; ".join(s) for s in batch["sentences"][:n]]
            for logger in wandb:
                logger.log_image("val_masks", overlays, step=trainer.global_step, caption=captions)


def _wandb_image(image: torch.Tensor) -> object:
    import wandb

    return wandb.Image(image.permute(1, 2, 0).numpy())


#: Overlay colours of the targets of one image (RGB).
_COLOURS = torch.tensor([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]]).float()


def _overlay(image: torch.Tensor, masks: torch.Tensor) -> object:
    """A uint8 ``3×H×W`` image with ``K×H×W`` bool masks blended in colour, ``H×W×3`` numpy."""
    out = image.float().permute(1, 2, 0).clone()
    for k, mask in enumerate(masks.cpu()):
        out[mask] = 0.45 * out[mask] + 0.55 * _COLOURS[k % len(_COLOURS)]
    return out.round().byte().numpy()


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Min-max scale normalized images per image to uint8 ``N×3×H×W`` on the CPU."""
    x = images[:, :3].float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp(min=1e-6) * 255).round().to(torch.uint8)
