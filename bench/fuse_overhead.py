"""Extra cost of FUSE's multi-scale windows and recurrent injection per training step.

    python bench/fuse_overhead.py [--steps 10] [--batch-size 16] [--config configs/fuse.yaml]

Builds the model of the config three times on one batch of the embedded data: the plain
global-view model (no injection), injection from the global view's depths only
(``multi_scale: false``), and full FUSE (windows + injection); times forward + backward +
AdamW step and prints ms per step and the ratio to the plain model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parents[1]


def step_time(model, batch, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        loss = model(
            batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"]
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--config", default=str(ROOT / "configs/fuse.yaml"))
    args = parser.parse_args()

    from zoo.main import main as zoo_main

    with tempfile.TemporaryDirectory() as tmp:
        sys.argv = ["zoo"]
        common = [
            "--config",
            args.config,
            f"--data.init_args.root={tmp}",
            "--trainer.logger=false",
            "--data.init_args.splits.train=32",
            "--data.init_args.splits.val=8",
            "--data.init_args.splits.test=8",
            f"--data.init_args.batch_size={args.batch_size}",
        ]
        variants = {
            "global view only (no injection)": ["--model.init_args.inject.layers=[]"],
            "injection, global depths only": ["--model.init_args.views.multi_scale=false"],
            "FUSE (windows + injection)": [],
        }
        results = {}
        for name, extra in variants.items():
            cli = zoo_main([*common, *extra], run=False)
            dm = cli.datamodule
            dm.prepare_data()
            dm.setup("fit")
            batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
            torch.manual_seed(0)
            results[name] = step_time(cli.model, batch, args.steps)
    base = next(iter(results.values()))
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}"
    )
    print(f"{'variant':<36}{'ms/step':>10}{'ratio':>8}")
    for name, ms in results.items():
        print(f"{name:<36}{ms:>10.1f}{ms / base:>8.2f}")


if __name__ == "__main__":
    main()
