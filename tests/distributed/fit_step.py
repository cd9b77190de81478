"""One fit step of a tiny generator under a multi-process CPU strategy (gloo), then a checkpoint.

    python tests/distributed/fit_step.py <ddp|fsdp> <workdir>

Lightning starts the second process itself (it re-runs this script). A tiny FUSE with LoRA on
the frozen LLM (frozen and trainable parameters in one sharded unit) trains one step on the
embedded conversations; the checkpoint goes to ``<workdir>/step.ckpt`` (a folder of shards under FSDP2) and rank 0 writes ``<workdir>/result.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from lightning import Trainer, seed_everything

from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.models import FUSE, TrainingStage
from zoo.strategies import GeneratorFSDPStrategy


def build(dm: EmbeddedConversationDataModule) -> FUSE:
    seed_everything(0)
    return FUSE(
        tokenizer=dm.tokenizer,
        class_names=dm.class_names,
        stage=TrainingStage(train_connector=True, lora_rank=4),
    )


def main(kind: str, workdir: Path) -> None:
    dm = EmbeddedConversationDataModule(
        str(workdir / "data"), splits=EmbeddedSplits(8, 4, 4), batch_size=2, num_workers=0
    )
    strategy = (
        GeneratorFSDPStrategy(param_dtype=None, process_group_backend="gloo")
        if kind == "fsdp"
        else "ddp"
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        gradient_clip_val=1.0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = build(dm)
    trainer.fit(model, dm)
    trainer.save_checkpoint(workdir / "step.ckpt")
    loss = float(trainer.callback_metrics["train_loss"])
    if trainer.is_global_zero:
        (workdir / "result.json").write_text(
            json.dumps(
                {
                    "world_size": trainer.world_size,
                    "loss": loss,
                    "strategy": type(trainer.strategy).__name__,
                    "wrapped": sorted({type(m).__name__ for m in trainer.strategy.model.modules()}),
                }
            )
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], Path(sys.argv[2]))
