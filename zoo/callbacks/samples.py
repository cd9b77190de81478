"""Log a few sample retrievals (image with its top captions) to W&B and TensorBoard."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

__all__ = ["RetrievalSamples"]


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
        batch = trainer.datamodule.on_after_batch_transfer(
            pl_module.transfer_batch_to_device(batch, pl_module.device, 0), 0
        ) if trainer.datamodule is not None else batch
        n = min(self.num_images, len(batch["image"]))
        image_emb = pl_module.encode_image(batch["image"])[1]
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
                    "val_retrievals", [im.permute(1, 2, 0).numpy() for im in images],
                    step=trainer.global_step, caption=captions,
                )
            elif isinstance(logger, TensorBoardLogger):
                for i, (im, text) in enumerate(zip(images, captions, strict=True)):
                    logger.experiment.add_image(f"val_retrievals/{i}", im, trainer.global_step)
                    logger.experiment.add_text(f"val_retrievals/{i}", text, trainer.global_step)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Min-max scale normalized images per image to uint8 ``N×3×H×W`` on the CPU."""
    x = images[:, :3].float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x - lo) / (hi - lo).clamp(min=1e-6) * 255).round().to(torch.uint8)
