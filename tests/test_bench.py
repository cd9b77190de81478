"""bench/side_by_side.py runs: the smallest pair, one step, JSON with FLOPs that count CPU's
fused attention."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).parents[1] / "bench"


def load_bench() -> ModuleType:
    """``bench/side_by_side.py`` imported as ``python bench/side_by_side.py`` runs it: with the
    bench folder on ``sys.path``, so that it, its pairs (``side_by_side_models``) and their
    measuring library (``timing``) import one another by their top-level names.

    Returns:
        The ``side_by_side`` module.
    """
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module("side_by_side")


def test_cpu_attention_is_counted():
    load_bench()
    b, h, s, d = 2, 4, 16, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    counter = FlopCounterMode(display=False)
    with counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    forward = ops["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert forward == 4 * b * h * s * s * d  # QK^T and PV, 2 FLOPs per multiply-add
    # Backward: the scores recomputed and four gradient products (torch's CUDA formula).
    assert ops["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 5 * forward // 2


def test_smallest_pair_writes_its_table(tmp_path):
    bench = load_bench()
    output = tmp_path / "bench.json"
    bench.main(
        [
            "--device",
            "cpu",
            "--scale",
            "test",
            "--pairs",
            "llava",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--output",
            str(output),
        ]
    )
    report = json.loads(output.read_text())
    assert {"date", "device", "torch", "threads", "steps", "dims"} <= set(report["meta"])
    (result,) = report["results"]
    assert {
        "pair",
        "zoo_ms",
        "hf_ms",
        "hf_over_zoo",
        "zoo_gflop",
        "hf_gflop",
        "zoo_gflops_per_s",
        "hf_gflops_per_s",
        "zoo_attention_gflop",
        "hf_attention_gflop",
        "unmatched",
    } <= set(result)
    assert result["pair"] == "llava"
    assert result["zoo_gflop"] > 0 and result["hf_gflop"] > 0
    assert result["zoo_attention_gflop"] > 0 and result["hf_attention_gflop"] > 0
    # LLaVA's anatomy in the zoo does the reference's work, FLOP for FLOP.
    assert abs(result["zoo_gflop"] - result["hf_gflop"]) <= 0.02 * result["hf_gflop"]


def test_inference_bench_prints_its_tables(tmp_path, capsys):
    """bench/inference.py at the smallest scale: both parts run, exactly N tokens on both
    sides, the tables print, and the LLaVA anatomy decodes the reference's tokens."""
    load_bench()
    inference = importlib.import_module("inference")
    output = tmp_path / "inference.json"
    inference.main(
        [
            "--scale",
            "test",
            "--families",
            "llava",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--output",
            str(output),
        ]
    )
    printed = capsys.readouterr().out
    assert "| flavars default | FLAVARS.encode_image | timm loop | 4 |" in printed
    assert "zoo tok/s | reference tok/s | zoo / reference" in printed
    report = json.loads(output.read_text())
    rows = {(r["part"], r["batch_size"]): r for r in report["results"]}
    assert set(rows) == {("images", 4), ("generate", 1), ("generate", 2)}
    images = rows["images", 4]
    assert images["units"] == 8 and images["zoo_per_s"] > 0 and images["reference_per_s"] > 0
    for batch in (1, 2):
        row = rows["generate", batch]
        assert row["units"] == batch * 4  # B·N tokens: both sides generated exactly N
        assert row["zoo_over_reference"] == pytest.approx(
            row["reference_times_ms"][0] / row["zoo_times_ms"][0], rel=0.02
        )
        # FUSE with injection off is LLaVA: greedy decoding gives the reference's tokens.
        assert "same tokens: yes" in row["note"]


def test_encode_image_adapter_takes_both_returns():
    load_bench()
    inference = importlib.import_module("inference")
    pooled, embedding = torch.randn(2, 8), torch.randn(2, 4)
    assert inference.unit_embedding((pooled, embedding)) is embedding
    assert inference.unit_embedding(embedding) is embedding
