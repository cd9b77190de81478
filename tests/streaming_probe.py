"""A probe for the streaming tests, loaded into a real ``zoo fit`` as a callback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, Trainer

__all__ = ["SampleIds"]


class SampleIds(Callback):
    """Append each training batch's sample ids (``index``, else ``id``) to
    ``<folder>/ids-rank<R>.jsonl`` as ``{"epoch", "step", "ids"}``, before the step runs."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: Any, batch: Any, *args: Any
    ) -> None:
        ids = batch["index"].tolist() if "index" in batch else list(batch["id"])
        self.folder.mkdir(parents=True, exist_ok=True)
        line = {"epoch": trainer.current_epoch, "step": trainer.global_step, "ids": ids}
        with (self.folder / f"ids-rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")
