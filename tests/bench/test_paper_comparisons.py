"""bench/paper_comparisons.py at its tiniest: both comparisons train and test their two
variants through the CLI, print one table, and a fixed seed gives the same numbers again."""

from __future__ import annotations

import json
import math

from bench import paper_comparisons as bench

TINIEST = [
    "--train",
    "2",
    "--test",
    "2",
    "--batch-size",
    "4",
    "--epochs",
    "1",
    "--max-new-tokens",
    "2",
]


def test_both_comparisons_side_by_side_and_reproducible(tmp_path, capsys):
    out = tmp_path / "runs.json"
    results = bench.main([*TINIEST, "--json", str(out)])
    printed = capsys.readouterr().out
    assert [(r.comparison, r.variant) for r in results] == [
        (c, v) for c, (_, variants) in bench.COMPARISONS.items() for v in variants
    ]
    # Each variant is its config with the one override: the built models differ in it only.
    assert [r.configured for r in results] == [
        {"views.detail_tokens": "interleave"},
        {"views.detail_tokens": "pool"},
        {"sfi.key_positions": True},
        {"sfi.key_positions": False},
    ]
    for r in results:
        assert r.steps == 1  # 2 images, a caption and a question each: one batch of 4
        assert math.isfinite(r.metrics["test_loss"]) and 0 <= r.metrics["test_vqa_accuracy"] <= 1
        assert 0 <= r.majority <= 1
    table = printed.split("\ncomparison")[-1]
    for r in results:
        assert r.variant in table and f"{r.metrics['test_loss']:.3f}" in table
    assert "majority answer per type" in table
    assert len(json.loads(out.read_text())) == 4
    # The key positions are parameters of SFI and MDA: without them there are fewer.
    assert results[2].trainable > results[3].trainable
    # A fixed seed: the same comparison again gives the same numbers.
    again = bench.main(["aquila-key-positions", *TINIEST])
    assert [r.metrics for r in again] == [r.metrics for r in results[2:]]
