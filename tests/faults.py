"""Faults and probes for the CLI tests, loaded into a real ``zoo`` run as callbacks."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer

__all__ = ["LastCheckpointProbe", "SignalAt", "WeightsProbe", "stub_demo_page"]


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


class LastCheckpointProbe(Callback):
    """Note, when each training epoch starts, the global step that the run's ``last.ckpt`` holds
    (what a kill at that moment would leave): ``seen[epoch]``, None while there is none."""

    def __init__(self) -> None:
        self.seen: dict[int, int | None] = {}

    def on_train_epoch_start(self, trainer: Trainer, *args: Any) -> None:
        paths = [Path(c.dirpath) / "last.ckpt" for c in trainer.checkpoint_callbacks if c.dirpath]
        found = [p for p in paths if p.is_file()]
        step = (
            torch.load(found[0], map_location="cpu", weights_only=True)["global_step"]
            if found
            else None
        )
        self.seen[trainer.current_epoch] = step


class WeightsProbe(Callback):
    """Copy the model's state dict when each stage starts (after Lightning restored
    ``--ckpt_path``): ``seen[stage]``, with ``stage`` one of fit, validate, test, predict."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, torch.Tensor]] = {}

    def _note(self, stage: str, pl_module: Any) -> None:
        self.seen[stage] = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._note("fit", pl_module)

    def on_validation_start(self, trainer: Trainer, pl_module: Any) -> None:
        if trainer.state.fn == "validate":  # not the validation inside a fit
            self._note("validate", pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._note("test", pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._note("predict", pl_module)


def stub_demo_page(monkeypatch: Any) -> dict[str, Any]:
    """Make ``zoo demo`` build its page without serving it (and without Gradio where it is not
    installed): returns the dict that receives the served model's ``weights`` (its state dict)
    and the ``launch`` arguments."""
    import types

    import zoo.demo

    served: dict[str, Any] = {}

    class App:
        def launch(self, **kwargs: Any) -> None:
            served["launch"] = kwargs

    def build_app(demo: Any) -> App:
        served["weights"] = demo.model.state_dict()
        return App()

    monkeypatch.setitem(
        sys.modules, "gradio", sys.modules.get("gradio") or types.ModuleType("gradio")
    )
    monkeypatch.setattr(zoo.demo, "build_app", build_app)
    return served
