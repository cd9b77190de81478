"""The measuring library of ``bench/side_by_side.py``: sides, pairs, FLOPs and timing.

A :class:`Side` is one model's training step (forward + loss + backward + AdamW step, built by
:func:`make_side`); a :class:`Pair` holds the zoo's side and the Hugging Face reference's.
:func:`measure` times both sides interleaved round by round (the order alternating) after
warm-up steps and counts one step's FLOPs with ``torch.utils.flop_counter.FlopCounterMode``
(with formulas registered for CPU's fused attention, which the counter would count as zero);
:func:`table` prints the results as Markdown. :func:`measure_compile` times each side eager and
``torch.compile``d (the compile time, the graphs, graph breaks and recompiles that
``torch._dynamo``'s counters record) and :func:`compile_table` prints those.

This module imports only torch: the pairs (``side_by_side_models``) and the command
(``side_by_side``) import it, and it imports neither.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

#: Dense bf16 peak FLOP/s by device-name fragment (vendors' data sheets, SXM parts).
PEAK_BF16 = {
    "H200": 989e12,
    "H100": 989e12,
    "GH200": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "A10": 125e12,
    "L4": 121e12,
    "4090": 165e12,
    "B200": 2250e12,
}

# --------------------------------------------------------------------------------- FLOPs
aten = torch.ops.aten
_CPU_ATTENTION = [
    getattr(aten, name)
    for name in ("_scaled_dot_product_flash_attention_for_cpu",)
    if hasattr(aten, name)
]
_CPU_ATTENTION_BACKWARD = [
    getattr(aten, name)
    for name in ("_scaled_dot_product_flash_attention_for_cpu_backward",)
    if hasattr(aten, name)
]


def _register_cpu_attention() -> None:
    """FLOP formulas for CPU's fused attention (the counter has them for CUDA's kernels only,
    and counts the CPU op as zero): the counter's own CUDA formulas, 4·B·H·S·S'·D forward
    (two products) and 2.5 times that backward (the scores recomputed, four gradient products)."""
    from torch.utils import flop_counter

    missing = [op for op in _CPU_ATTENTION if op not in flop_counter.flop_registry]
    if missing:

        @register_flop_formula(missing)
        def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    missing = [op for op in _CPU_ATTENTION_BACKWARD if op not in flop_counter.flop_registry]
    if missing:

        @register_flop_formula(missing)
        def _backward(
            grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
        ) -> int:
            return flop_counter.sdpa_backward_flop_count(
                grad_out_shape, query_shape, key_shape, value_shape
            )


_register_cpu_attention()

ATTENTION_OPS = {
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_cudnn_attention_backward",
    "_flash_attention_forward",
    "_flash_attention_backward",
    "_efficient_attention_forward",
    "_efficient_attention_backward",
}


def _op_name(op: Any) -> str:
    """``aten._scaled_dot_product_flash_attention_for_cpu`` -> its name without namespace."""
    return str(op).removeprefix("aten.").split(".")[0]


# -------------------------------------------------------------------------------- sides
@dataclass
class Side:
    """One side of a pair: its training step and how many parameters it trains.

    Args:
        name: the side's name in the table (a class name).
        step: one training step (forward + loss + backward + optimizer step).
        parameters: the number of trainable parameters.
    """

    name: str
    step: Callable[[], None]
    parameters: int


@dataclass
class Pair:
    """The zoo's side and the reference's, built at matched dimensions.

    Args:
        name: the pair's name (one of ``side_by_side.PAIRS``).
        zoo: the zoo's side.
        hf: the Hugging Face reference's side.
        batch_size: samples per step (both sides).
        tokens: tokens per sample the LLM / text side sees (0: images and captions).
        unmatched: what could not be matched between the sides ("" when nothing).
    """

    name: str
    zoo: Side
    hf: Side
    batch_size: int
    tokens: int  # tokens per sample the LLM / text side sees (0: images and captions)
    unmatched: str = ""


@dataclass
class Result:
    """One pair's measurements: median step times, FLOPs per step and their rates.

    Args:
        pair: the pair's name.
        zoo: the zoo side's name.
        hf: the reference side's name.
        batch_size: samples per step.
        zoo_ms: the zoo side's median step time (ms).
        hf_ms: the reference's median step time (ms).
        hf_over_zoo: ``hf_ms / zoo_ms`` (above 1: the zoo is faster).
        zoo_gflop: the zoo side's GFLOP per step.
        hf_gflop: the reference's GFLOP per step.
        zoo_gflops_per_s: the zoo side's GFLOP/s at its median time.
        hf_gflops_per_s: the reference's GFLOP/s at its median time.
        zoo_attention_gflop: the zoo side's GFLOP per step in fused attention.
        hf_attention_gflop: the reference's GFLOP per step in fused attention.
        zoo_samples_per_s: the zoo side's samples per second.
        hf_samples_per_s: the reference's samples per second.
        zoo_mfu: the zoo side's model FLOP utilization (None without a known peak).
        hf_mfu: the reference's model FLOP utilization (None without a known peak).
        zoo_params_m: the zoo side's trainable parameters, millions.
        hf_params_m: the reference's trainable parameters, millions.
        unmatched: what could not be matched between the sides.
        zoo_times_ms: the zoo side's timed steps (ms).
        hf_times_ms: the reference's timed steps (ms).
    """

    pair: str
    zoo: str
    hf: str
    batch_size: int
    zoo_ms: float
    hf_ms: float
    hf_over_zoo: float
    zoo_gflop: float
    hf_gflop: float
    zoo_gflops_per_s: float
    hf_gflops_per_s: float
    zoo_attention_gflop: float
    hf_attention_gflop: float
    zoo_samples_per_s: float
    hf_samples_per_s: float
    zoo_mfu: float | None = None
    hf_mfu: float | None = None
    zoo_params_m: float = 0.0
    hf_params_m: float = 0.0
    unmatched: str = ""
    zoo_times_ms: list[float] = field(default_factory=list)
    hf_times_ms: list[float] = field(default_factory=list)


class TrainingStep:
    """Forward + loss + backward + AdamW for a module whose ``loss_fn()`` returns the loss.

    Args:
        module: the model; every parameter that requires grad trains.
        loss_fn: computes the step's loss through ``module``.
        device: where the model runs (fused AdamW on every device).
        bf16: run the forward under bf16 autocast.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn: Callable[[], torch.Tensor],
        device: torch.device,
        bf16: bool,
    ) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        # PyTorch's fused AdamW kernel on every device (CPU since torch 2.4): the for-loop
        # implementation, CPU's default, allocates parameter-sized temporaries at every step,
        # a cost no FLOP counts that grows with the trainable parameters (GeoPix's memory banks).
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
        self.loss_fn, self.device, self.bf16 = loss_fn, device, bf16
        self.parameters = sum(p.numel() for p in params)
        module.train()

    def __call__(self) -> None:
        """One training step."""
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            loss = self.loss_fn()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def make_side(
    name: str,
    module: torch.nn.Module,
    loss_fn: Callable[[], torch.Tensor],
    device: torch.device,
    bf16: bool,
    compile_: bool = False,
) -> Side:
    """One side: ``module`` moved to ``device`` (and compiled) with its training step.

    Args:
        name: the side's name in the table.
        module: the model.
        loss_fn: computes the step's loss through ``module``.
        device: where the model runs.
        bf16: run the forward under bf16 autocast.
        compile_: ``torch.compile`` the model.

    Returns:
        The side, its step ready to time.
    """
    module.to(device)
    if compile_:
        module.compile()
    trainer = TrainingStep(module, loss_fn, device, bf16)
    return Side(name, trainer, trainer.parameters)


# ---------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(side: Side) -> tuple[int, int]:
    """The FLOPs of one step, counted by ``FlopCounterMode``.

    Args:
        side: the side whose step runs once under the counter.

    Returns:
        (all FLOPs, the FLOPs in fused attention kernels).
    """
    counter = FlopCounterMode(display=False)
    with counter:
        side.step()
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in by_op.items() if _op_name(op) in ATTENTION_OPS)
    return counter.get_total_flops(), attention


def interleaved(
    pair: Pair, warmup: int, steps: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Per-step wall times of each side, measured in alternating order after warm-up.

    Args:
        pair: the two sides.
        warmup: untimed rounds first.
        steps: timed rounds (one step of each side a round).
        device: the device to synchronize around each step.

    Returns:
        (the zoo side's times, the reference's times), in ms.
    """
    times: dict[str, list[float]] = {"zoo": [], "hf": []}
    for round_ in range(warmup + steps):
        order = [("zoo", pair.zoo), ("hf", pair.hf)]
        for key, side in order if round_ % 2 == 0 else order[::-1]:
            _sync(device)
            start = time.perf_counter()
            side.step()
            _sync(device)
            if round_ >= warmup:
                times[key].append((time.perf_counter() - start) * 1000)
    return times["zoo"], times["hf"]


def measure(
    pair: Pair, warmup: int, steps: int, device: torch.device, peak: float | None
) -> Result:
    """Times and counts the FLOPs of both sides of ``pair``.

    Args:
        pair: the two sides.
        warmup: untimed rounds first.
        steps: timed rounds.
        device: where the sides run.
        peak: the device's peak FLOP/s for the MFU (None: no MFU).

    Returns:
        The pair's medians, FLOPs and rates.
    """
    zoo_times, hf_times = interleaved(pair, warmup, steps, device)
    (zoo_flops, zoo_attn), (hf_flops, hf_attn) = step_flops(pair.zoo), step_flops(pair.hf)
    zoo_ms, hf_ms = statistics.median(zoo_times), statistics.median(hf_times)
    zoo_rate, hf_rate = zoo_flops / zoo_ms / 1e6, hf_flops / hf_ms / 1e6  # GFLOP/s
    return Result(
        pair.name,
        pair.zoo.name,
        pair.hf.name,
        pair.batch_size,
        round(zoo_ms, 1),
        round(hf_ms, 1),
        round(hf_ms / zoo_ms, 3),
        round(zoo_flops / 1e9, 4),
        round(hf_flops / 1e9, 4),
        round(zoo_rate, 1),
        round(hf_rate, 1),
        round(zoo_attn / 1e9, 4),
        round(hf_attn / 1e9, 4),
        round(pair.batch_size / zoo_ms * 1000, 2),
        round(pair.batch_size / hf_ms * 1000, 2),
        None if peak is None else round(zoo_rate * 1e9 / peak, 4),
        None if peak is None else round(hf_rate * 1e9 / peak, 4),
        round(pair.zoo.parameters / 1e6, 2),
        round(pair.hf.parameters / 1e6, 2),
        pair.unmatched,
        [round(t, 1) for t in zoo_times],
        [round(t, 1) for t in hf_times],
    )


def device_peak(device: torch.device, override_tflops: float | None) -> float | None:
    """The dense bf16 peak FLOP/s of ``device`` (from ``PEAK_BF16`` by device name).

    Args:
        device: the device measured.
        override_tflops: a peak given by the user, in TFLOP/s (wins when given).

    Returns:
        The peak in FLOP/s, or None for the CPU and an unknown GPU.
    """
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peak in PEAK_BF16.items():
        if fragment in name:
            return peak
    return None


# ---------------------------------------------------------------------------- compile
@dataclass
class Compiled:
    """One side eager and compiled: step times, the compile time and dynamo's counts.

    Args:
        name: the side's name.
        eager_ms: the eager side's median step time (ms).
        compiled_ms: the compiled side's median step time (ms).
        speedup: ``eager_ms / compiled_ms`` (above 1: compiled is faster).
        round_ratios: the smallest, median and largest per-round ``eager / compiled`` ratio
            (both steps of a round ran under the same load).
        compile_s: the compiled side's first step minus its median step (s): what compiling
            the forward and backward graphs cost.
        eager_first_s: the eager side's first step minus its median step (s), for scale.
        graphs: graphs dynamo compiled during the first step.
        graph_breaks: graph breaks dynamo recorded during the first step.
        recompiles: graphs compiled after the first step (0 in a steady state).
        eager_times_ms: the eager side's timed steps (ms).
        compiled_times_ms: the compiled side's timed steps (ms).
    """

    name: str
    eager_ms: float
    compiled_ms: float
    speedup: float
    round_ratios: tuple[float, float, float]
    compile_s: float
    eager_first_s: float
    graphs: int
    graph_breaks: int
    recompiles: int
    eager_times_ms: list[float] = field(default_factory=list)
    compiled_times_ms: list[float] = field(default_factory=list)


@dataclass
class CompileResult:
    """One pair's compile measurements.

    Args:
        pair: the pair's name.
        batch_size: samples per step.
        zoo: the zoo side, eager and compiled (by the family's ``speed.compile`` switch, or
            for FLAVARS, which has none, each transformer block compiled alike).
        hf: the reference, eager and compiled (``module.compile()``: the whole model).
    """

    pair: str
    batch_size: int
    zoo: Compiled
    hf: Compiled


def _dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far, from ``torch._dynamo.utils.counters``."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def measure_compile(
    eager: Pair, compiled: Pair, warmup: int, steps: int, device: torch.device
) -> CompileResult:
    """Times the four sides (zoo and reference, each eager and compiled) in interleaved rounds.

    The first round runs each side once alone and times it, counting the graphs and graph
    breaks dynamo records during the compiled sides' first steps; ``warmup - 1`` untimed
    rounds follow (at least none), then ``steps`` timed rounds, the order of the four sides
    rotating each round. Graphs compiled after the first step are recompiles.

    Args:
        eager: the pair built eager.
        compiled: the same pair built compiled.
        warmup: untimed rounds, the first (compiling) one included.
        steps: timed rounds.
        device: where the sides run.

    Returns:
        The pair's eager and compiled medians, speed-ups, compile times and counts.
    """
    sides = {
        ("zoo", False): eager.zoo,
        ("zoo", True): compiled.zoo,
        ("hf", False): eager.hf,
        ("hf", True): compiled.hf,
    }
    first: dict[tuple[str, bool], float] = {}
    counts: dict[tuple[str, bool], list[int]] = {key: [0, 0, 0] for key in sides}
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in sides}
    order = list(sides)
    for round_ in range(max(warmup, 1) + steps):
        for key in order[round_ % 4 :] + order[: round_ % 4]:
            graphs, breaks = _dynamo_counts()
            _sync(device)
            start = time.perf_counter()
            sides[key].step()
            _sync(device)
            elapsed = time.perf_counter() - start
            new_graphs, new_breaks = _dynamo_counts()
            if round_ == 0:
                first[key] = elapsed
                counts[key][0], counts[key][1] = new_graphs - graphs, new_breaks - breaks
            else:
                counts[key][2] += new_graphs - graphs
            if round_ >= max(warmup, 1):
                times[key].append(elapsed * 1000)

    def side(who: str) -> Compiled:
        slow, fast = times[who, False], times[who, True]
        ratios = [a / b for a, b in zip(slow, fast, strict=True)]
        slow_ms, fast_ms = statistics.median(slow), statistics.median(fast)
        graphs, breaks, recompiles = counts[who, True]
        return Compiled(
            (eager.zoo if who == "zoo" else eager.hf).name,
            round(slow_ms, 1),
            round(fast_ms, 1),
            round(slow_ms / fast_ms, 3),
            (round(min(ratios), 3), round(statistics.median(ratios), 3), round(max(ratios), 3)),
            round(first[who, True] - fast_ms / 1000, 2),
            round(first[who, False] - slow_ms / 1000, 2),
            graphs,
            breaks,
            recompiles,
            [round(t, 1) for t in slow],
            [round(t, 1) for t in fast],
        )

    return CompileResult(eager.name, eager.batch_size, side("zoo"), side("hf"))


def compile_table(results: list[CompileResult]) -> str:
    """The compile results as a Markdown table, one row per side.

    Args:
        results: one per pair.

    Returns:
        The table's lines.
    """
    head = [
        "pair",
        "side",
        "eager ms (range)",
        "compiled ms (range)",
        "eager / compiled",
        "per round: median (range)",
        "compile s",
        "graphs / breaks / recompiles",
    ]
    lines = ["| " + " | ".join(head) + " |", "| --- | --- |" + " ---: |" * 6]
    for r in results:
        for who, c in (("zoo", r.zoo), ("HF, whole model", r.hf)):
            lo, mid, hi = c.round_ratios
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{r.pair}, B {r.batch_size}",
                        f"{who}: {c.name}",
                        f"{c.eager_ms:.0f} ({min(c.eager_times_ms):.0f}-"
                        f"{max(c.eager_times_ms):.0f})",
                        f"{c.compiled_ms:.0f} ({min(c.compiled_times_ms):.0f}-"
                        f"{max(c.compiled_times_ms):.0f})",
                        f"{c.speedup:.2f}",
                        f"{mid:.2f} ({lo:.2f}-{hi:.2f})",
                        f"{c.compile_s:.1f}",
                        f"{c.graphs} / {c.graph_breaks} / {c.recompiles}",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- table
def table(results: list[Result], cuda: bool) -> str:
    """The results as a Markdown table.

    Args:
        results: one per pair.
        cuda: add the MFU column.

    Returns:
        The table's lines.
    """
    head = ["pair", "zoo ms", "HF ms", "HF / zoo", "GFLOP/step zoo / HF", "GFLOP/s zoo / HF"]
    if cuda:
        head.append("MFU zoo / HF")
    head.append("unmatched")
    lines = [
        "| " + " | ".join(head) + " |",
        "| --- | ---: | ---: | ---: | --- | --- |" + (" --- |" if cuda else "") + " --- |",
    ]
    for r in results:
        row = [
            f"{r.zoo} vs {r.hf}, B {r.batch_size}",
            f"{r.zoo_ms:.0f}",
            f"{r.hf_ms:.0f}",
            f"{r.hf_over_zoo:.2f}",
            f"{r.zoo_gflop:.3g} / {r.hf_gflop:.3g}",
            f"{r.zoo_gflops_per_s:.3g} / {r.hf_gflops_per_s:.3g}",
        ]
        if cuda:
            row.append(f"{100 * (r.zoo_mfu or 0):.1f} % / {100 * (r.hf_mfu or 0):.1f} %")
        row.append(r.unmatched or "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
