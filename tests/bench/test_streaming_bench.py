"""bench/streaming.py at toy size: it runs end to end and its figures hold together (not timed)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench"


def test_streaming_bench_runs_at_toy_size(tmp_path, capsys):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    bench = importlib.import_module("streaming")
    out = tmp_path / "streaming.json"
    args = ["--samples", "24", "--size", "48", "--workers", "1", "--epochs", "1"]
    result = bench.main([*args, "--batch_size", "8", "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    for loader in ("file_loader", "streaming_loader"):
        assert result[loader]["samples"] == 24 and result[loader]["samples_per_s"] > 0
    assert result["convert"]["samples_per_s"] > 0 and result["stored_bytes"] > 0
    estimate = result["skyscript_estimate"]
    per_sample = result["stored_bytes"] / 24
    assert estimate["total_gb"] == 5_200_000 * per_sample / 1e9
    assert (
        estimate["headroom"]
        == estimate["loader_samples_per_s_per_gpu"] / (estimate["gpu_samples_per_s"])
    )
    assert "| streaming loader |" in capsys.readouterr().out
