"""Training speed of the zoo's families side by side with the Hugging Face references.

    python bench/side_by_side.py --device cpu  [--output bench.json] [--pairs flava clip ...]
    python bench/side_by_side.py --device cuda [--compile]
    python bench/side_by_side.py --device cpu --compile [--pairs ...]

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
  the same LLaVA;
* ``geopix_no_memory``: the same GeoPix without its class-wise memory (an ablation: what the
  memory's bank, at the paper's width whatever the scale, costs beside the LLaVA).

``--device cpu`` uses tiny dimensions and one thread, with glibc keeping the memory a step
frees for the next step (:func:`zoo.allocator.keep_freed_memory`, both sides alike: the CPU
has no caching allocator, and a fresh gradient faults its pages in every step;
``--allocator default`` measures glibc's defaults); ``--device cuda`` the papers' (FLAVA
ViT-B/16 at 224 px batch 64, CLIP ViT-B/16 batch 256, LLaVA with a 1.1 B Llama and
ViT-L/14-336, batch 8, 576 image + 448 text tokens) under bf16 autocast with fused AdamW.
Every parameter of both sides trains.

``--compile`` measures ``torch.compile`` instead: each pair is built twice, eager and
compiled, and the four sides (zoo and reference, eager and compiled) run in interleaved rounds
(the order rotating). The zoo side compiles as its family's switch does (``speed.compile``:
each LLM decoder layer and vision block; FLAVARS, which has no switch, each block of its
vision, text and fusion encoders alike), the reference as a whole (``module.compile()``). The
table gives per side the eager and compiled medians (and ranges), the speed-up with the
range of its per-round ratios, the compile time (the first step minus the median step), and
the graphs, graph breaks and recompiles ``torch._dynamo``'s counters record.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):  # the zoo of this checkout; the pairs beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The measuring library beside this file (it imports neither this command nor the pairs).
from timing import (  # noqa: E402
    CompileResult,
    Result,
    compile_table,
    device_peak,
    measure,
    measure_compile,
    table,
)

from zoo.allocator import keep_freed_memory  # noqa: E402

PAIRS = ("flava", "clip", "llava", "fuse", "aquila", "geopix", "geopix_no_memory")


def main(argv: list[str] | None = None) -> list[Result] | list[CompileResult]:
    """Builds and times the chosen pairs, prints their table and writes the JSON.

    Args:
        argv: the command line (None: ``sys.argv``).

    Returns:
        One result per pair (``--compile``: one compile result per pair).

    Raises:
        SystemExit: ``--device cuda`` and no CUDA device is visible.
    """
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
    parser.add_argument(
        "--allocator",
        choices=["keep-freed", "default"],
        default="keep-freed",
        help="cpu only: glibc keeps freed blocks for the next step (zoo.allocator), or its defaults",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="measure torch.compile: each side eager and compiled, the compile time",
    )
    parser.add_argument("--peak-tflops", type=float, default=None, help="override the MFU peak")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from side_by_side_models import build_pair, scale_dims
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    device = torch.device(args.device)
    allocator = "default"
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        if args.allocator == "keep-freed" and keep_freed_memory():
            allocator = "keep-freed"
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    dims = scale_dims(args.scale or args.device)
    bf16 = device.type == "cuda"
    peak = device_peak(device, args.peak_tflops)
    results: list = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.pairs:
            torch.manual_seed(0)
            pair = build_pair(name, dims, Path(tmp), device, bf16)
            if args.compile:
                torch.manual_seed(0)
                compiled = build_pair(name, dims, Path(tmp), device, bf16, compile_=True)
                results.append(measure_compile(pair, compiled, args.warmup, args.steps, device))
                zoo, hf = results[-1].zoo, results[-1].hf
                print(
                    f"{name}: zoo {zoo.eager_ms:.0f} -> {zoo.compiled_ms:.0f} ms "
                    f"(compile {zoo.compile_s:.1f} s), HF {hf.eager_ms:.0f} -> "
                    f"{hf.compiled_ms:.0f} ms (compile {hf.compile_s:.1f} s)",
                    flush=True,
                )
                del compiled
                torch._dynamo.reset()  # the next pair compiles afresh
            else:
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
        f"allocator {allocator}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, medians; {wall:.0f} s in all\n"
    )
    print(compile_table(results) if args.compile else table(results, device.type == "cuda"))
    if args.output:
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "device": where,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "allocator": allocator,
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
