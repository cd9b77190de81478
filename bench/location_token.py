"""Aquila with and without the location token, over several seeds (issue 26).

    python bench/location_token.py --seeds 0 1 2 --output runs/location_token
    python bench/location_token.py --output runs/location_token --summarize  # table only
    python bench/location_token.py --flavars_checkpoint runs/flavars/.../last.ckpt  # a third arm

Each seed fits ``configs/aquila.yaml`` (SFI, no MDA) twice on the embedded data's VQA and
location questions (hemisphere, latitude band): once with ``configs/aquila/location.yaml`` (the token), once
without, the same data, steps and seed; with ``--flavars_checkpoint`` a third arm whose token
starts from that FLAVARS' location encoder, frozen. Each run's last validation row of ``metrics.csv`` gives
the accuracy per question type; the table shows their mean and spread (sample standard
deviation) over the seeds beside the majority answer and chance (docs/evaluation.md,
"Location-aware generators"). A fit that fails stops the bench with its log's path.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
TYPES = ("hemisphere", "band", "presence", "count", "position", "colour", "category")
ALL_TYPES = "[presence,count,position,colour,category,hemisphere,band]"
ARMS = {
    "token": ["--config", "configs/aquila/location.yaml"],
    "none": [f"--model.init_args.question_types={ALL_TYPES}"],
}


def build_parser() -> argparse.ArgumentParser:
    """The bench's command line.

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train", type=int, default=400, help="training images")
    parser.add_argument("--val", type=int, default=100, help="validation images")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--output", type=Path, default=Path("runs/location_token"))
    parser.add_argument("--summarize", action="store_true", help="only read finished runs")
    parser.add_argument(
        "--flavars_checkpoint",
        type=Path,
        default=None,
        help="a third arm: the token's location encoder from this FLAVARS checkpoint, frozen",
    )
    parser.add_argument("--arms", nargs="+", default=None, help="run only these arms")
    return parser


def arms(args: argparse.Namespace) -> dict[str, list[str]]:
    """The arms the bench compares and the arguments each adds.

    Args:
        args: the bench's arguments.

    Returns:
        ``{arm: extra fit arguments}``, ``token`` and ``none`` (and ``flavars``).

    Raises:
        ValueError: ``--arms`` names an arm there is not (``flavars`` without a checkpoint).
    """
    out = dict(ARMS)
    if args.flavars_checkpoint is not None:
        out["flavars"] = [
            *ARMS["token"],
            f"--model.init_args.location.checkpoint={args.flavars_checkpoint.resolve()}",
        ]
    if args.arms:
        unknown = [arm for arm in args.arms if arm not in out]
        if unknown:
            raise ValueError(
                f"--arms {unknown}: the arms are {sorted(out)}"
                + ("" if "flavars" in out else "; 'flavars' needs --flavars_checkpoint")
            )
        out = {arm: out[arm] for arm in args.arms}
    return out


def fit(arm: str, seed: int, args: argparse.Namespace) -> Path:
    """Fit one arm and seed; returns its ``metrics.csv``.

    Args:
        arm: a key of :func:`arms`.
        seed: the run's seed.
        args: the bench's arguments.

    Returns:
        The run's metrics file.

    Raises:
        RuntimeError: the fit failed (its log is named).
    """
    out = args.output / f"{arm}_{seed}"
    command = [sys.executable, "-m", "zoo", "fit", "--config", "configs/aquila.yaml"]
    command += arms(args)[arm]
    command += [
        f"--data.init_args.splits.train={args.train}",
        f"--data.init_args.splits.val={args.val}",
        "--data.init_args.tasks=[vqa,location]",
        "--data.init_args.eval_tasks=[vqa,location]",
        "--model.init_args.sfi.mda_layers=[]",  # SFI only: the token's effect, at CPU speed
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.check_val_every_n_epoch={args.epochs}",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        f"--seed_everything={seed}",
        f"--trainer.default_root_dir={out}",
        f"--trainer.logger.init_args.save_dir={out}",
    ]
    out.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".log")
    start = time.perf_counter()
    with log.open("w") as stream:
        code = subprocess.call(command, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT)
    if code:
        raise RuntimeError(f"{arm} seed {seed} failed (exit {code}): see {log}")
    print(f"{arm} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return metrics_file(out)


def metrics_file(out: Path) -> Path:
    """The newest ``metrics.csv`` under a run folder.

    Args:
        out: the run's ``default_root_dir``.

    Returns:
        The file.

    Raises:
        FileNotFoundError: the run wrote none.
    """
    found = sorted(out.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime_ns)
    if not found:
        raise FileNotFoundError(f"no metrics.csv under {out}: did the fit finish?")
    return found[-1]


def last_validation(path: Path) -> dict[str, float]:
    """The last row of ``path`` with validation accuracies.

    Args:
        path: a run's ``metrics.csv``.

    Returns:
        ``{question type: accuracy}`` (and ``all`` for every question).
    """
    rows = [r for r in csv.DictReader(path.open()) if r.get("val_vqa_accuracy")]
    row = rows[-1]
    out = {"all": float(row["val_vqa_accuracy"])}
    for kind in TYPES:
        value = row.get(f"val_vqa_accuracy_{kind}")
        if value:
            out[kind] = float(value)
    return out


def table(results: dict[str, list[dict[str, float]]]) -> str:
    """Mean ± spread per question type and arm, as markdown (a column per arm).

    Args:
        results: per arm, one dict of accuracies per seed.

    Returns:
        The table.
    """

    def cell(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {spread:.3f} ({', '.join(f'{v:.3f}' for v in values)})"

    names = list(results)
    lines = ["| question type | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for kind in ("hemisphere", "band", "all", *TYPES[2:]):
        columns = [[r[kind] for r in results[arm] if kind in r] for arm in names]
        if all(columns):
            lines.append(f"| {kind} | " + " | ".join(cell(c) for c in columns) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Run (or read) the fits and print the table.

    Args:
        argv: the command line (None: ``sys.argv``).

    Returns:
        The table.
    """
    args = build_parser().parse_args(argv)
    chosen = arms(args)
    results: dict[str, list[dict[str, float]]] = {arm: [] for arm in chosen}
    for seed in args.seeds:
        for arm in chosen:
            path = (
                metrics_file(args.output / f"{arm}_{seed}")
                if args.summarize
                else fit(arm, seed, args)
            )
            results[arm].append(last_validation(path))
    text = table(results)
    print(text)
    return text


if __name__ == "__main__":
    main()
