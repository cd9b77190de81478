"""bench/memory_plan.py: the paper setups on the meta device, with plausible numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench import memory_plan as mp

LLAMA2_7B = 6_738_415_616  # Llama-2-7B / Vicuna-7B v1.5 (32000 tokens)


@pytest.fixture(scope="module")
def geopix() -> dict:
    return mp.plan(mp.build("geopix-stage1", mp.PAPER_CONFIGS["geopix-stage1"]))


def test_parameters_per_module(geopix):
    rows = {r["module"]: r for r in geopix["parameters"]}
    llm, vision = rows["llm"], rows["vision"]
    # LoRA r 128 on q_proj and v_proj (the paper's W_q, W_v) of 32 decoder layers: r x (in + out)
    # each; the input embeddings and lm_head train whole under a gradient mask that lets only
    # the [SEG] rows move (vocabulary x 4096 each).
    lora = 32 * 128 * 2 * (4096 + 4096)
    rows_of_vocabulary = (llm["trainable"] - lora) / (2 * 4096)
    assert rows_of_vocabulary == pytest.approx(32_000, rel=0.01)
    assert llm["params"] - llm["trainable"] == pytest.approx(
        LLAMA2_7B - 2 * 32_000 * 4096, rel=0.02
    )
    assert vision["params"] == pytest.approx(304e6, rel=0.02) and vision["trainable"] == 0
    assert all(r["params"] >= r["trainable"] for r in rows.values())


def test_memory_of_ddp_plan(geopix):
    memory = geopix["memory_gb"]
    rows = geopix["parameters"]
    assert memory["weights"] == pytest.approx(sum(r["bytes"] for r in rows) / 1e9)
    # bf16 LLM (2 bytes a parameter) + float32 tower and heads.
    assert 14.5 < memory["weights"] < 18.5
    trainable = sum(r["trainable_bytes"] for r in rows) / 1e9
    assert memory["grads"] == pytest.approx(2 * trainable)  # grads + DDP buckets
    assert memory["optimizer"] == pytest.approx(2 * trainable)  # AdamW: two states
    # Micro-batch 1 x ~1600 tokens through a LoRA'd 7B LLM: tens of GB at most, not zero.
    assert 5 < memory["activations"] < 40
    assert geopix["fits"] and memory["total"] < mp.GPU_MEMORY_GB
    assert geopix["global_batch"] == 196


def test_trace_counts_saved_tensors_not_parameters():
    """A frozen linear layer saves nothing for an input without grad; a trainable one saves its
    input (B x N x D floats); fused attention saves q, k, v, out and log-sum-exp, no T x T."""

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.frozen = nn.Linear(64, 64).requires_grad_(False)
            self.trained = nn.Linear(64, 64)

        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            x = self.trained(self.frozen(batch["x"]))
            q = x.view(2, 1, 128, 64)
            return nn.functional.scaled_dot_product_attention(q, q, q).sum()

    with torch.device("meta"):
        model = Toy()
    setup = mp.Setup("toy", model, {"x": torch.empty(2, 128, 64, device="meta")}, 2, 1, 1, "ddp")
    traced = mp.trace_activations(setup)
    tokens = 2 * 128 * 64 * 4
    # the trained layer's input + its output (q, k, v are one tensor) + out + lse
    assert traced["saved"] == tokens + tokens + tokens + 2 * 128 * 4


@pytest.mark.slow
def test_every_paper_setup_fits_80_gb():
    assert mp.main([]) == 0
