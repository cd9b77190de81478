"""The papers' comparisons of issue 14 at tiny scale on the embedded data, side by side.

    python bench/paper_comparisons.py                                    # both, the default run
    python bench/paper_comparisons.py fuse-detail-tokens --seeds 0 1 --json out.json
    python bench/paper_comparisons.py --train 8 --test 8 --epochs 1 --batch-size 4   # a smoke run

Comparisons (each a pair of variants of one run config):

* ``fuse-detail-tokens``: FUSE (``configs/fuse.yaml``) with its detail stacks split into
  interleaved sub-grids (``detail_tokens: interleave``, 24 stacks that keep the canvas's
  resolution, the authors') against area-pooled to the token grid (``pool``, 6 stacks).
* ``aquila-key-positions``: Aquila (``configs/aquila.yaml``) with the keys' absolute positions
  inside their window (``key_positions: true``, the paper's) against without.

Each variant is its run config parsed by the zoo's CLI (the model exactly as configured, one
override apart), on the same embedded split (captions + VQA for training, held-out VQA
questions for the test) and from the same seed, trained on one CPU for ``--epochs`` and tested
by the model's own test loop (greedy answers, exact match after normalizing). The table gives
the test loss and the VQA accuracy over all questions and per type, beside the accuracy of
answering each type's most frequent training answer. **Tiny scale**: 1-2 M parameter models and a
few hundred steps; a few points of accuracy are within seed noise (``--seeds`` several), so read
the table as a smoke-level comparison, not as the papers' ablations.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[1]

#: name -> (run config, {variant: its one override}); the first variant is the paper's.
COMPARISONS: dict[str, tuple[str, dict[str, str]]] = {
    "fuse-detail-tokens": (
        "configs/fuse.yaml",
        {
            "interleave (24 stacks)": "--model.init_args.views.detail_tokens=interleave",
            "pool (6 stacks)": "--model.init_args.views.detail_tokens=pool",
        },
    ),
    "aquila-key-positions": (
        "configs/aquila.yaml",
        {
            "key positions": "--model.init_args.sfi.key_positions=true",
            "no key positions": "--model.init_args.sfi.key_positions=false",
        },
    ),
}


@dataclass
class Result:
    """One trained variant: its test metrics, the majority baseline, the run's size."""

    comparison: str
    variant: str
    seed: int
    metrics: dict[str, float]
    majority: float
    steps: int
    trainable: int
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    #: The overridden hyper-parameter as the built model holds it.
    configured: dict[str, Any] = field(default_factory=dict)


def majority_accuracy(dm: Any) -> float:
    """Accuracy of answering each test question with its type's most frequent training answer."""
    from zoo.metrics.vqa import normalize_answer

    answers: dict[str, Counter] = defaultdict(Counter)
    for record in dm.train_dataset.records:
        turns = record["conversations"]
        for k, qtype in enumerate(record.get("question_types") or []):
            answers[qtype][normalize_answer(turns[2 * k + 1]["value"])] += 1
    hits = [
        answers[record["question_types"][0]].most_common(1)[0][0]
        == normalize_answer(record["conversations"][1]["value"])
        for record in dm.test_dataset.records
    ]
    return sum(hits) / len(hits)


def run_variant(
    comparison: str, variant: str, seed: int, args: argparse.Namespace, root: Path
) -> Result:
    """Build the variant through the CLI, train it for ``args.epochs`` and test it."""
    from lightning.pytorch import Trainer, seed_everything

    from zoo.main import main as zoo_main

    config, variants = COMPARISONS[comparison]
    settings = {
        "train": args.train,
        "test": args.test,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "max_new_tokens": args.max_new_tokens,
    }
    sys.argv = ["zoo"]  # the CLI reads only the list below
    cli = zoo_main(
        [
            "--config",
            str(ROOT / config),
            f"--seed_everything={seed}",
            "--trainer.logger=false",
            f"--data.init_args.root={root}",
            f"--data.init_args.splits.train={args.train}",
            "--data.init_args.splits.val=8",
            f"--data.init_args.splits.test={args.test}",
            f"--data.init_args.batch_size={args.batch_size}",
            "--data.init_args.eval_tasks=[vqa]",
            f"--model.init_args.generation.max_new_tokens={args.max_new_tokens}",
            variants[variant],
        ],
        run=False,
    )
    model, dm = cli.model, cli.datamodule
    seed_everything(seed, verbose=False)
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    tester = Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics = {k: float(v) for k, v in tester.test(model, datamodule=dm, verbose=False)[0].items()}
    seconds = time.perf_counter() - start
    key = variants[variant].removeprefix("--model.init_args.").split("=")[0]
    configured: Any = model.hparams  # a dotted key walks the groups (dicts or dataclasses)
    for part in key.split("."):
        configured = configured[part] if isinstance(configured, dict) else getattr(configured, part)
    return Result(
        comparison,
        variant,
        seed,
        metrics,
        majority_accuracy(dm),
        trainer.global_step,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        seconds,
        settings,
        {key: configured},
    )


def table(results: list[Result]) -> str:
    """Variants side by side: test loss, VQA accuracy overall and per type (mean over seeds)."""
    types = sorted(
        {
            k.removeprefix("test_vqa_accuracy_")
            for r in results
            for k in r.metrics
            if k.startswith("test_vqa_accuracy_")
        }
    )
    head = f"{'comparison':<22}{'variant':<24}{'seeds':>6}{'test loss':>10}{'VQA acc':>9}"
    head += "".join(f"{t[:9]:>10}" for t in types) + f"{'steps':>7}{'params':>9}{'s/run':>7}"
    lines = [head]
    groups: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.comparison, r.variant)].append(r)
    for (comparison, variant), runs in groups.items():

        def mean(key: str, runs: list[Result] = runs) -> float:
            values = [r.metrics[key] for r in runs if key in r.metrics]
            return statistics.fmean(values) if values else float("nan")

        line = f"{comparison:<22}{variant:<24}{len(runs):>6}{mean('test_loss'):>10.3f}"
        line += f"{mean('test_vqa_accuracy'):>9.3f}"
        line += "".join(f"{mean(f'test_vqa_accuracy_{t}'):>10.3f}" for t in types)
        line += f"{runs[0].steps:>7}{runs[0].trainable / 1e6:>8.2f}M"
        line += f"{statistics.fmean(r.seconds for r in runs):>7.0f}"
        lines.append(line)
    majority = {r.comparison: r.majority for r in results}
    lines.append(
        "majority answer per type: " + ", ".join(f"{k} {v:.3f}" for k, v in majority.items())
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "comparisons",
        nargs="*",
        choices=[[], *COMPARISONS],
        default=[],
        help="which comparisons (default: all)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--test", type=int, default=128, help="test images (one question each)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=8, help="answer length at test")
    parser.add_argument("--json", help="also write every run's metrics here")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for comparison in args.comparisons or list(COMPARISONS):
            for seed in args.seeds:
                for variant in COMPARISONS[comparison][1]:
                    result = run_variant(comparison, variant, seed, args, Path(tmp) / "embedded")
                    print(
                        f"{comparison} / {variant} / seed {seed}: "
                        f"{ {k: round(v, 3) for k, v in result.metrics.items()} }",
                        flush=True,
                    )
                    results.append(result)
    print("\n" + table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return results


if __name__ == "__main__":
    main()
