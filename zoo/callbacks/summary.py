"""The results of a fit in sight: a table of the final and best validation metrics."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

__all__ = ["MetricsSummary", "format_summary"]


def _lower_is_better(name: str) -> bool:
    return any(word in name.lower() for word in ("loss", "error", "perplexity", "_km"))


def format_summary(history: dict[str, list[tuple[int, int, float]]]) -> str:
    """A Markdown table: metric, final value, best value and the epoch/step it was reached."""
    rows = ["| metric | final | best | best at |", "| --- | ---: | ---: | --- |"]
    for name in sorted(history):
        values = history[name]
        pick = min if _lower_is_better(name) else max
        epoch, step, best = pick(values, key=lambda v: v[2])
        rows.append(f"| {name} | {values[-1][2]:.4g} | {best:.4g} | epoch {epoch}, step {step} |")
    return "\n".join(rows)


class MetricsSummary(Callback):
    """Record every validation metric (``val_*``) after each validation of a fit and print the
    final and best values as a table when the fit ends (or is interrupted). The history is
    part of the checkpoint, so a resumed fit's table covers the whole run.

    Args:
        prefix: metrics whose names start with it are recorded.
    """

    def __init__(self, prefix: str = "val_") -> None:
        self.prefix = prefix
        self.history: dict[str, list[tuple[int, int, float]]] = {}
        self.printed = ""

    @property
    def state_key(self) -> str:
        return "MetricsSummary"

    def state_dict(self) -> dict[str, Any]:
        return {"history": {k: [list(v) for v in vs] for k, vs in self.history.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history", {})
        self.history = {
            k: [(int(e), int(s), float(v)) for e, s, v in vs] for k, vs in history.items()
        }

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        for name, value in trainer.callback_metrics.items():
            if not name.startswith(self.prefix) or getattr(value, "numel", lambda: 1)() != 1:
                continue
            value = float(value)
            if math.isfinite(value):
                self.history.setdefault(name, []).append(
                    (trainer.current_epoch, trainer.global_step, value)
                )

    def _print(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or not self.history or self.printed:
            return
        self.printed = format_summary(self.history)
        print(f"\nValidation metrics of this fit (final and best):\n{self.printed}\n", flush=True)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._print(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._print(trainer)
