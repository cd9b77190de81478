"""README's first command, timed: `python -m zoo fit --config configs/flavars.yaml`.

Runs the default FLAVARS fit in this process on a fresh copy of the embedded dataset (so the
generation is timed too, unless --data-root names an existing one), then prints the wall time
and the final validation metrics beside their chance levels.

    python bench/flavars_default.py [--data-root DIR] [--budget-s 300]

Target (issue 2): at most 300 s on 2 CPU cores; zero-shot accuracy and image-to-text R@1 at
least 3x chance; image-to-location R@1 above chance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()

ROOT = Path(__file__).parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="reuse this embedded-data folder (default: fresh)")
    parser.add_argument("--budget-s", type=float, default=300.0)
    args = parser.parse_args()

    from zoo.main import main as zoo_main

    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data_root or str(Path(tmp) / "data")
        sys.argv = ["zoo"]
        cli = zoo_main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/flavars.yaml"),
                f"--data.init_args.root={data_root}",
                f"--trainer.default_root_dir={tmp}/runs",
                f"--trainer.logger.init_args.save_dir={tmp}/runs",
                "--trainer.enable_progress_bar=false",
            ]
        )
        wall = time.perf_counter() - START
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    n_val = cli.datamodule.source.splits.val
    n_classes = len(cli.datamodule.class_names)
    rows = [
        ("val_zero_shot_acc", 1 / n_classes, 3.0),
        ("val_image_to_text_R@1", 1 / n_val, 3.0),
        ("val_text_to_image_R@1", 1 / n_val, None),
        ("val_image_to_location_R@1", 1 / n_val, 1.0),
        ("val_knn_acc", 1 / n_classes, None),
    ]
    print(
        f"\nwall time (generation + fit, after installation): {wall:.0f} s (budget {args.budget_s:.0f} s)"
    )
    print(f"{'metric':<28}{'value':>8}{'chance':>8}{'x chance':>10}  target")
    ok = wall <= args.budget_s
    for name, chance, target in rows:
        value = metrics[name]
        ratio = value / chance
        verdict = (
            "" if target is None else (f">{target:g}x " + ("ok" if ratio > target else "MISSED"))
        )
        ok &= target is None or ratio > target
        print(f"{name:<28}{value:>8.3f}{chance:>8.3f}{ratio:>10.1f}  {verdict}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
