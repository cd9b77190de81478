"""bench/side_by_side.py's FLAVARS pairs: the contrastive pair does CLIP's work FLOP for FLOP,
and the full objective (B-row ITM) no more than FlavaForPreTraining's."""

from __future__ import annotations

import json

from tests.test_bench import load_bench


def test_flavars_pairs_do_no_more_work_than_the_references(tmp_path):
    bench = load_bench()
    output = tmp_path / "bench.json"
    bench.main(
        [
            "--device",
            "cpu",
            "--scale",
            "test",
            "--pairs",
            "flava",
            "clip",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--output",
            str(output),
        ]
    )
    results = {r["pair"]: r for r in json.loads(output.read_text())["results"]}
    clip, flava = results["clip"], results["flava"]
    # Contrastive only: no masked pass, no fusion (the towers differ by CLIP's text pooling).
    assert abs(clip["zoo_gflop"] - clip["hf_gflop"]) <= 0.02 * clip["hf_gflop"]
    # B fused rows for ITM and MMM, as FLAVA (not ALBEF's 3B).
    assert flava["zoo_gflop"] <= flava["hf_gflop"]
