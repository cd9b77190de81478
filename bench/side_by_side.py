"""Training speed of the zoo's families side by side with the Hugging Face references.

    python bench/side_by_side.py --device cpu  [--output bench.json] [--pairs flava clip ...]
    python bench/side_by_side.py --device cuda [--compile]

Each pair builds both sides at matched dimensions (what cannot be matched is named in the
table's ``unmatched`` column) and times one training step (forward + loss + backward + AdamW
step) of each, interleaved round by round (the order alternating), after warm-up steps; the
medians are reported. FLOPs per step come from ``torch.utils.flop_counter.FlopCounterMode``
over one step, with formulas registered for CPU's fused attention (which the counter would
count as zero); GFLOP/s = FLOPs / median time; on CUDA, MFU against the device's bf16 peak.

Pairs (``--pairs``):

* ``flava``: FLAVARS, five losses, vs ``FlavaForPreTraining`` (codebook labels precomputed);
* ``clip``: FLAVARS with the contrastive loss only vs ``CLIPModel``;
* ``llava``: FUSE with windows and injection off (LLaVA's anatomy), loaded with ``llava:``
  from a random ``LlavaForConditionalGeneration`` saved to a temporary folder, vs that model;
* ``fuse``: FUSE with windows and recurrent injection vs the same LLaVA;
* ``aquila``: Aquila (ConvNeXt, SFI + MDA, the LLaVA's Llama) vs the same LLaVA;
* ``geopix``: GeoPix (the LLaVA's tower and Llama, mask decoder, one target per image) vs
  the same LLaVA.

``--device cpu`` uses tiny dimensions and one thread; ``--device cuda`` the papers' (FLAVA
ViT-B/16 at 224 px batch 64, CLIP ViT-B/16 batch 256, LLaVA with a 1.1 B Llama and
ViT-L/14-336, batch 8, 576 image + 448 text tokens) under bf16 autocast with fused AdamW.
Every parameter of both sides trains.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):  # the zoo of this checkout; the pairs beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

PAIRS = ("flava", "clip", "llava", "fuse", "aquila", "geopix")

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
    """One side of a pair: its training step and how many samples / tokens a step holds."""

    name: str
    step: Callable[[], None]
    parameters: int


@dataclass
class Pair:
    name: str
    zoo: Side
    hf: Side
    batch_size: int
    tokens: int  # tokens per sample the LLM / text side sees (0: images and captions)
    unmatched: str = ""


@dataclass
class Result:
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
    """Forward + loss + backward + AdamW for a module whose ``loss_fn()`` returns the loss."""

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn: Callable[[], torch.Tensor],
        device: torch.device,
        bf16: bool,
    ) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        fused = device.type == "cuda"
        self.optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused)
        self.loss_fn, self.device, self.bf16 = loss_fn, device, bf16
        self.parameters = sum(p.numel() for p in params)
        module.train()

    def __call__(self) -> None:
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
    """(all FLOPs, attention FLOPs) of one step."""
    counter = FlopCounterMode(display=False)
    with counter:
        side.step()
    by_op = counter.get_flop_counts().get("Global", {})
    attention = sum(v for op, v in by_op.items() if _op_name(op) in ATTENTION_OPS)
    return counter.get_total_flops(), attention


def interleaved(
    pair: Pair, warmup: int, steps: int, device: torch.device
) -> tuple[list[float], list[float]]:
    """Per-step wall times (ms) of each side, measured in alternating order after warm-up."""
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
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, peak in PEAK_BF16.items():
        if fragment in name:
            return peak
    return None


# ----------------------------------------------------------------------------- table
def table(results: list[Result], cuda: bool) -> str:
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


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--scale",
        choices=["cpu", "cuda", "test"],
        default=None,
        help="dimensions (default: the device's; test: the smallest, for the tests)",
    )
    parser.add_argument("--pairs", nargs="+", choices=PAIRS, default=list(PAIRS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (cpu only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the MFU peak")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from side_by_side_models import build_pair, scale_dims
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    dims = scale_dims(args.scale or args.device)
    bf16 = device.type == "cuda"
    peak = device_peak(device, args.peak_tflops)
    results: list[Result] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.pairs:
            torch.manual_seed(0)
            pair = build_pair(name, dims, Path(tmp), device, bf16, args.compile)
            results.append(measure(pair, args.warmup, args.steps, device, peak))
            print(
                f"{name}: zoo {results[-1].zoo_ms:.0f} ms, HF {results[-1].hf_ms:.0f} ms",
                flush=True,
            )
            del pair
            if device.type == "cuda":
                torch.cuda.empty_cache()
    wall = time.perf_counter() - started
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\ntorch {torch.__version__}, {where}, {torch.get_num_threads()} threads, "
        f"{args.steps} timed steps after {args.warmup} warm-up, medians; {wall:.0f} s in all\n"
    )
    print(table(results, device.type == "cuda"))
    if args.output:
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "device": where,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "scale": args.scale or args.device,
            "warmup": args.warmup,
            "steps": args.steps,
            "bf16": bf16,
            "compile": args.compile,
            "peak_flops": peak,
            "wall_s": round(wall, 1),
            "dims": dims,
        }
        Path(args.output).write_text(
            json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
        )
    return results


if __name__ == "__main__":
    main()
