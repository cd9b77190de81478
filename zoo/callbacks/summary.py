"""The results of a fit in sight: a table of the final and best validation metrics beside the
untrained model's and the validation data's baseline."""

from __future__ import annotations

import logging
import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from zoo.callbacks.baselines import Baseline, validation_baselines

__all__ = ["MetricsSummary", "format_summary"]

log = logging.getLogger(__name__)


def _lower_is_better(name: str) -> bool:
    return any(word in name.lower() for word in ("loss", "error", "perplexity", "_km"))


def format_summary(
    history: dict[str, list[tuple[int, int, float]]],
    untrained: dict[str, float] | None = None,
    baselines: dict[str, Baseline] | None = None,
    prefix: str = "val_",
) -> str:
    """A Markdown table: metric, final value, best value and the epoch/step it was reached,
    the untrained model's value and the baseline's.

    Args:
        history: ``(epoch, step, value)`` of each validation, by metric name.
        untrained: the values of the validation run before the first training step (``—``
            where missing).
        baselines: the trivial predictors' values by metric name without ``prefix`` (``—``
            where missing).
        prefix: the metric names' prefix.

    Returns:
        The table.
    """
    untrained, baselines = untrained or {}, baselines or {}
    rows = [
        "| metric | final | best | best at | untrained | baseline |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for name in sorted(history):
        values = history[name]
        pick = min if _lower_is_better(name) else max
        epoch, step, best = pick(values, key=lambda v: v[2])
        before = f"{untrained[name]:.4g}" if name in untrained else "—"
        base = baselines.get(name.removeprefix(prefix))
        base_text = f"{base.value:.4g} ({base.name})" if base is not None else "—"
        rows.append(
            f"| {name} | {values[-1][2]:.4g} | {best:.4g} | epoch {epoch}, step {step} "
            f"| {before} | {base_text} |"
        )
    return "\n".join(rows)


class MetricsSummary(Callback):
    """Record every validation metric (``val_*``) after each validation of a fit and print the
    final and best values as a table when the fit ends (or is interrupted), beside the
    untrained model's and the baseline's (:func:`~zoo.callbacks.baselines.validation_baselines`:
    majority answer, chance, whole-image mask, computed from the validation data).

    The untrained values are those of the sanity check when it ran over the whole validation
    set (``trainer.num_sanity_val_steps: -1``, as the default configs set). The history, the
    untrained values and the baselines are part of the checkpoint, so a resumed fit's table
    covers the whole run.

    Args:
        prefix: metrics whose names start with it are recorded.
    """

    def __init__(self, prefix: str = "val_") -> None:
        self.prefix = prefix
        self.history: dict[str, list[tuple[int, int, float]]] = {}
        self.untrained: dict[str, float] = {}
        self.baselines: dict[str, Baseline] | None = None
        self.printed = ""

    @property
    def state_key(self) -> str:
        return "MetricsSummary"

    def state_dict(self) -> dict[str, Any]:
        """The history, the untrained values and the baselines.

        Returns:
            A plain, picklable dict.
        """
        return {
            "history": {k: [list(v) for v in vs] for k, vs in self.history.items()},
            "untrained": dict(self.untrained),
            "baselines": {k: list(v) for k, v in (self.baselines or {}).items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (older checkpoints hold the history only).

        Args:
            state_dict: the saved state.
        """
        history = state_dict.get("history", {})
        self.history = {
            k: [(int(e), int(s), float(v)) for e, s, v in vs] for k, vs in history.items()
        }
        self.untrained = {k: float(v) for k, v in state_dict.get("untrained", {}).items()}
        baselines = state_dict.get("baselines")
        if baselines:
            self.baselines = {k: Baseline(float(v), str(n)) for k, (v, n) in baselines.items()}

    def _metrics(self, trainer: Trainer) -> dict[str, float]:
        out = {}
        for name, value in trainer.callback_metrics.items():
            if not name.startswith(self.prefix) or getattr(value, "numel", lambda: 1)() != 1:
                continue
            value = float(value)
            if math.isfinite(value):
                out[name] = value
        return out

    def _baselines(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.baselines is not None or trainer.datamodule is None:
            return
        totals = trainer.num_val_batches
        total = int(sum(totals)) if totals and all(math.isfinite(t) for t in totals) else None
        generated = getattr(pl_module, "val_generate_batches", None)
        try:  # the VQA question types the model reports separately (a generator's metrics)
            types = list(pl_module.metrics["val"].question_types)  # type: ignore[index]
        except (AttributeError, KeyError, TypeError):
            types = []
        try:
            self.baselines = validation_baselines(trainer.datamodule, total, types, generated)
        except Exception as error:  # a baseline must never break a fit: say so and go on
            log.warning("no validation baselines for the summary: %r", error)
            self.baselines = {}

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Record the validation's metrics (the sanity check's as the untrained values when
        it covered every validation batch); compute the baselines once.

        Args:
            trainer: the trainer.
            pl_module: the model.
        """
        if trainer.state.fn != "fit":
            return
        self._baselines(trainer, pl_module)
        if trainer.sanity_checking:
            if list(trainer.num_sanity_val_batches) == list(trainer.num_val_batches):
                self.untrained = self._metrics(trainer)
            return
        for name, value in self._metrics(trainer).items():
            self.history.setdefault(name, []).append(
                (trainer.current_epoch, trainer.global_step, value)
            )

    def _print(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or not self.history or self.printed:
            return
        self.printed = format_summary(self.history, self.untrained, self.baselines, self.prefix)
        print(
            f"\nValidation metrics of this fit (final and best):\n{self.printed}\n"
            "untrained: the same validation before the first training step "
            "(trainer.num_sanity_val_steps: -1); baseline: a trivial predictor scored on the "
            "same validation data\n",
            flush=True,
        )

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Print the table.

        Args:
            trainer: the trainer.
            pl_module: the model.
        """
        self._print(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Print the table of what was validated before the interruption.

        Args:
            trainer: the trainer.
            pl_module: the model.
            exception: the interruption.
        """
        self._print(trainer)
