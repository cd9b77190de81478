"""Shared fixture: running a metric on two DDP ranks (gloo, separate processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2


def _worker(rank: int, init_file: str, out_dir: str, run: Callable[..., Any], args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE
    )
    try:
        torch.save(run(rank, *args), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture
def on_two_ranks(tmp_path: Path) -> Callable[..., list[Any]]:
    """``on_two_ranks(run, *args)`` calls ``run(rank, *args)`` on 2 gloo ranks and returns what
    each returned, rank 0 first (saved as ``rank{r}.pt`` in ``tmp_path``). ``run`` must be a
    module-level function, so that a spawned process can find it.

    Forked rather than spawned where possible: a spawned child re-imports torch and torchmetrics
    (~5 s of CPU each), while a fork starts at once. Either way the ranks are separate processes
    that only share data through the gloo collectives.
    """

    def start(run: Callable[..., Any], *args: Any) -> list[Any]:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(
            _worker,
            args=(str(tmp_path / "pg_init"), str(tmp_path), run, args),
            nprocs=WORLD_SIZE,
            join=True,
            start_method=method,
        )
        return [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]

    return start
