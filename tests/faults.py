"""Faults for the CLI tests, loaded into a real ``zoo`` subprocess as callbacks."""

from __future__ import annotations

import os
import signal
from typing import Any

from lightning.pytorch import Callback, Trainer

__all__ = ["SignalAt"]


class SignalAt(Callback):
    """Send this process ``signum`` once the training step ``step`` (global step) has run, as
    a scheduler or a user would; ``times`` sends it again (a second Ctrl+C)."""

    def __init__(self, step: int = 1, signum: int = int(signal.SIGTERM), times: int = 1) -> None:
        self.step = step
        self.signum = signum
        self.times = times

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)
