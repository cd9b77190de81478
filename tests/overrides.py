"""Config overrides the tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def two_step_trainer(runs: str | Path) -> dict[str, Any]:
    """The ``trainer`` block of a two-step fit (one validation batch, no sanity check, no
    progress bar) writing its run and its W&B files under ``runs``.

    Args:
        runs: the run folder.

    Returns:
        The block, for a YAML override's ``trainer`` key.
    """
    return {
        "max_epochs": 1,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": False,
        "default_root_dir": str(runs),
        "logger": {"init_args": {"save_dir": str(runs)}},
    }
