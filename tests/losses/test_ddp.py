"""DDP: the local-rows x gathered-columns contrastive loss over 2 processes gives the 1-process
loss (the mean of the ranks' losses) and the 1-process update."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_contrastive.py")


def _run(tmp: Path, devices: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp), str(devices)],
        check=True,
        env=env,
        timeout=240,
        capture_output=True,
    )


def test_ddp_gathered_loss_equals_single_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    _run(single, 1)
    _run(ddp, 2)
    one = torch.load(single / "rank0.pt", weights_only=True)
    ranks = [torch.load(ddp / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # Each rank scores its own half of the rows against the gathered columns (open_clip's
    # local form): the mean of the ranks' losses is the loss of the whole global batch.
    assert torch.allclose((ranks[0]["loss"] + ranks[1]["loss"]) / 2, one["loss"], atol=1e-6)
    assert not torch.allclose(ranks[0]["loss"], ranks[1]["loss"])  # two different halves
    for rank in ranks:
        # And the update is the single-process update: gradients are those of one global loss.
        for key, value in one["state"].items():
            assert torch.allclose(rank["state"][key], value, atol=1e-6), key
