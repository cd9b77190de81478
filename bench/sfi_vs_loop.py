"""CPU micro-benchmark: vectorized SFI against its per-query reference loop.

Times one forward pass (no grad, eval mode) of :class:`zoo.layers.sfi.SpatialFeatureIntegration`
and of :func:`zoo.layers.sfi.sfi_reference_loop` on the same module and inputs, checks that they
agree, and prints milliseconds per call and the speed-up.

    python bench/sfi_vs_loop.py [--batch 2] [--grid 16] [--scales 1 2 4 8] [--dim 256] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from zoo.layers.sfi import SpatialFeatureIntegration, sfi_reference_loop


def _time_ms(fn: Callable[[], object], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` in milliseconds after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--grid", type=int, default=16, help="L: L x L output tokens")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8], help="k_s")
    parser.add_argument("--dim", type=int, default=256, help="width D of maps, queries, output")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20, help="timed calls of the fast path")
    parser.add_argument("--loop-repeats", type=int, default=2, help="timed calls of the loop")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    dims = [args.dim] * len(args.scales)
    module = SpatialFeatureIntegration(args.dim, args.grid, dims, num_heads=args.heads).eval()
    features = [
        torch.randn(args.batch, args.dim, k * args.grid, k * args.grid) for k in args.scales
    ]
    tiny = [f[:1, :, : k * 2, : k * 2] for f, k in zip(features, args.scales, strict=True)]
    tiny_module = SpatialFeatureIntegration(args.dim, 2, dims, num_heads=args.heads).eval()

    with torch.no_grad():
        fast = module(features)
        slow = sfi_reference_loop(module, features)
        err = (fast - slow).abs().max().item()
        fast_ms = _time_ms(lambda: module(features), args.repeats, warmup=3)
        sfi_reference_loop(tiny_module, tiny)  # warm the loop's kernels cheaply
        loop_ms = _time_ms(lambda: sfi_reference_loop(module, features), args.loop_repeats, 0)

    keys = sum(k * k for k in args.scales)
    print(
        f"SFI B={args.batch} L={args.grid} ({args.grid**2} tokens) k={tuple(args.scales)} "
        f"({keys} keys/query) D={args.dim} heads={args.heads}, "
        f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}"
    )
    print(f"max |vectorized - loop| = {err:.2e}")
    print(f"vectorized (one SDPA call): {fast_ms:10.2f} ms/call")
    print(f"reference loop            : {loop_ms:10.2f} ms/call")
    print(f"speed-up                  : {loop_ms / fast_ms:10.1f}x")


if __name__ == "__main__":
    main()
