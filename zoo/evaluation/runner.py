"""Run a list of evaluations on one model, writing the results table after each."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule

from zoo.evaluation.base import Context, Evaluation, baseline_numbers
from zoo.evaluation.config import EvaluationConfig
from zoo.evaluation.results import result_rows, write_results

__all__ = ["evaluate"]

log = logging.getLogger(__name__)


def evaluate(
    model: LightningModule,
    evaluations: Sequence[Evaluation | EvaluationConfig],
    output: str | Path,
    ckpt_path: str | None = None,
    device: str = "auto",
    limit_batches: int | None = None,
    keep_going: bool = False,
    header: dict[str, Any] | None = None,
    paper_row: str | None = None,
) -> list[dict[str, Any]]:
    """Run every evaluation on ``model``; write the table after each one; return its rows.

    Args:
        model: any zoo model; each evaluation checks it has the capabilities it needs.
        evaluations: built evaluations, or configs (built here, at the model's image size).
        output: folder of ``results.json`` and ``results.md``.
        ckpt_path: the checkpoint the model's weights came from (for UPerNet's encoder).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        limit_batches: at most this many batches per split (smoke runs).
        keep_going: record a failing evaluation as an ``error`` row and go on.
        header: run information written above the table (model, config, checkpoint, date).
        paper_row: the row of the evaluations' ``paper:`` numbers to compare with (default: the
            model's class name; an ablation names its own row, e.g. ``Aquila Concat``).

    Raises:
        CapabilityError: (without ``keep_going``) an evaluation does not apply to the model,
            before any evaluation runs.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = Context(
        model.to(device).eval(), torch.device(device), ckpt_path, limit_batches, Path(output)
    )
    if not keep_going:
        for item in evaluations:
            item.check_model(model)
    image_size = model.hparams.get("image_size")
    tokenizer = getattr(model, "tokenizer", None)
    rows: list[dict[str, Any]] = []
    for n, item in enumerate(evaluations, start=1):
        log.info("evaluation %d/%d: %s (%s)", n, len(evaluations), item.name, item.protocol)
        try:
            item.check_model(model)
            evaluation = item.build(image_size) if isinstance(item, EvaluationConfig) else item
            dm = evaluation.data
            if tokenizer is not None and (
                hasattr(type(dm), "tokenizer") or "tokenizer" in vars(dm)
            ):
                dm.tokenizer = tokenizer  # the model's vocabulary, not one built from this data
                if hasattr(model, "conversation") and hasattr(type(dm), "conversation"):
                    dm.conversation = model.conversation  # and its conversation format
            dm.prepare_data()
            metrics, error = evaluation.run(ctx), None
        except Exception as exc:
            if not keep_going:
                raise
            log.error("evaluation %s failed: %s", item.name, exc)
            metrics, error = {}, f"{type(exc).__name__}: {exc}"
        ctx.model.eval()
        name = paper_row or type(model).__name__
        rows += result_rows(
            item, metrics, error, item.paper_numbers(name), baseline_numbers(item.paper, name)
        )
        write_results(rows, output, header)
    return rows
