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


def test_smallest_pair_writes_its_table(tmp_path, monkeypatch):
    bench = load_bench()
    kept: list[bool] = []  # the CPU run keeps freed memory (recorded, not applied to pytest)
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: kept.append(True) or True)
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
    assert kept == [True] and report["meta"]["allocator"] == "keep-freed"
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


def _eager_compile(monkeypatch) -> list[str]:
    """``torch.compile`` with dynamo's ``eager`` backend (graphs captured, no code generated:
    seconds instead of minutes on a CPU); returns the names of what was compiled."""
    compiled, original = [], torch.compile

    def eager_backend(model=None, **kwargs):
        compiled.append(getattr(model, "__qualname__", type(model).__name__))
        return original(model, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", eager_backend)
    return compiled


def test_compile_table_prints(tmp_path, capsys, monkeypatch):
    """``--compile``: both sides eager and compiled, the zoo's by its family's switch (each
    decoder layer and vision block), the reference whole; compile time and dynamo's counts."""
    compiled = _eager_compile(monkeypatch)
    bench = load_bench()
    output = tmp_path / "compile.json"
    argv = ["--device", "cpu", "--scale", "test", "--pairs", "llava", "--compile"]
    argv += ["--allocator", "default"]  # glibc's own behaviour: left alone
    monkeypatch.setattr(bench, "keep_freed_memory", lambda: pytest.fail("not asked for"))
    bench.main([*argv, "--steps", "1", "--warmup", "0", "--output", str(output)])
    printed = capsys.readouterr().out
    assert "| pair | side | eager ms (range) | compiled ms (range) |" in printed
    assert "| llava, B 2 | zoo: FUSE injection off |" in printed
    assert "| llava, B 2 | HF, whole model: LlavaForConditionalGeneration |" in printed
    # The zoo's switch: 2 decoder layers + 3 CLIP layers (the llava: tower's too); HF: 1 model.
    assert len(compiled) == 6
    report = json.loads(output.read_text())
    assert report["meta"]["compile"] is True and report["meta"]["allocator"] == "default"
    (result,) = report["results"]
    for side in (result["zoo"], result["hf"]):
        assert side["graphs"] > 0 and side["recompiles"] == 0
        assert len(side["eager_times_ms"]) == len(side["compiled_times_ms"]) == 1
        assert side["speedup"] == pytest.approx(side["eager_ms"] / side["compiled_ms"], rel=0.01)


def test_injecting_layers_compile_without_breaks(tmp_path, monkeypatch):
    """FUSE's recurrent injection under ``speed.compile``: its hooks run eagerly, so the hooked
    decoder layers neither recompile per layer nor break their graphs."""
    from torch._dynamo.utils import counters

    _eager_compile(monkeypatch)
    load_bench()
    from side_by_side_models import conversation_batch, generator_model, scale_dims

    d = scale_dims("test")["llava"]
    torch.manual_seed(0)
    model = generator_model("fuse", d, tmp_path, compile_=True)[0].train()
    batch, _ = conversation_batch(model.tokenizer, d, 16, torch.device("cpu"))
    torch._dynamo.reset()
    counters.clear()
    model.training_step(batch, 0).backward()
    graphs = counters["stats"]["unique_graphs"]
    model.training_step(batch, 0).backward()
    assert sum(counters["graph_break"].values()) == 0
    assert counters["stats"]["unique_graphs"] == graphs <= 3  # CLIP layer, decoder layer


@pytest.mark.slow  # inductor compiles a CLIP layer and a decoder layer: 15 s warm, 110 s cold
def test_compiled_step_equals_eager(tmp_path):
    """The family's ``speed.compile`` (inductor) gives eager's loss and gradients: FUSE with
    LLaVA's anatomy, at the bench's smallest scale, one training step."""
    load_bench()
    from side_by_side_models import conversation_batch, generator_model, scale_dims

    d = scale_dims("test")["llava"]
    models = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        models.append(generator_model("llava", d, tmp_path, compile_)[0].train())
    eager, compiled = models
    assert all(block._compiled_call_impl is not None for block in compiled._vision_blocks())
    batch, _ = conversation_batch(eager.tokenizer, d, 16, torch.device("cpu"))
    losses = [model.training_step(batch, 0) for model in models]
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=1e-5)
    for loss in losses:
        loss.backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_geopix_memory_ablation_pair_differs_only_by_its_memory(tmp_path):
    """``geopix_no_memory`` is the ``geopix`` pair's model without the class-wise memory: the
    same parameters but the memory's, so its row measures what the memory costs."""
    load_bench()
    from side_by_side_models import generator_model, scale_dims

    d = scale_dims("test")["llava"]
    with_memory, label, _, _ = generator_model("geopix", d, tmp_path)
    without, ablation, _, _ = generator_model("geopix_no_memory", d, tmp_path)
    assert with_memory.decoder.memory is not None and without.decoder.memory is None
    assert label == "GeoPix" and "without its memory" in ablation
    names = {n for n, _ in with_memory.named_parameters()}
    assert {n for n, _ in without.named_parameters()} == {
        n for n in names if not n.startswith("decoder.memory.")
    }
