"""Run by test_ddp.py: one fit step with DDP on 2 CPU processes (gloo), or on 1 process.

Usage: python ddp_contrastive.py OUT_DIR DEVICES
Writes OUT_DIR/rank{r}.pt with the first step's loss and the weights after that step.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from lightning import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from zoo.losses.contrastive import contrastive_loss, init_logit_scale

GLOBAL_BATCH = 8


class TwoTower(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(6, 4)
        self.b = torch.nn.Linear(5, 4)
        self.logit_scale = init_logit_scale()
        self.first_loss: torch.Tensor | None = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = contrastive_loss(self.a(x), self.b(y), self.logit_scale)
        if self.first_loss is None:
            self.first_loss = loss.detach().clone()
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def main(out: Path, devices: int) -> None:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(
        torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randn(GLOBAL_BATCH, 5, generator=g)
    )
    loader = DataLoader(data, batch_size=GLOBAL_BATCH // devices, shuffle=False)
    model = TwoTower()
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"loss": model.first_loss, "state": state}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
