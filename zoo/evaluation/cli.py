"""``zoo evaluate``: a checkpoint over evaluation configs, the way the papers evaluate it.

    zoo evaluate --config configs/flavars.yaml --ckpt_path runs/.../last.ckpt \\
        --evals configs/eval/suites/flavars_embedded.yaml --output results/flavars

``--config`` is the run's own config (it rebuilds the model and its tokenizer), ``--ckpt_path``
its checkpoint, ``--evals`` evaluation configs or suites (:mod:`zoo.evaluation.config`). The
command writes ``results.json`` and ``results.md`` in ``--output`` after every evaluation, so a
failure later in the list loses nothing. Values are percentages, as the papers print them.
"""

from __future__ import annotations

import argparse
import inspect
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from zoo.evaluation import protocols
from zoo.evaluation.base import Evaluation
from zoo.evaluation.config import load_evaluations
from zoo.evaluation.geo_shift import geo_shift_table
from zoo.evaluation.results import log_to_wandb, markdown_table
from zoo.evaluation.runner import evaluate
from zoo.io import atomic_write_text
from zoo.main import build_from_configs, configure_logging, run_parser

__all__ = ["build_parser", "main"]


def _protocols_help() -> str:
    """Each protocol class and the first paragraph of its docstring."""
    lines = ["protocols (the class_path of an evaluation config: zoo.evaluation.<name> or <name>):"]
    for name, cls in vars(protocols).items():  # in the order they are defined
        if (
            inspect.isclass(cls)
            and issubclass(cls, Evaluation)
            and cls.__module__ == protocols.__name__
        ):
            summary = (cls.__doc__ or "").split("\n\n")[0].replace("``", "")
            lines.append(
                textwrap.fill(
                    " ".join(summary.split()),
                    width=100,
                    initial_indent=f"  {name:<20}",
                    subsequent_indent=" " * 22,
                )
            )
    lines.append("Their options: docs/evaluation.md, or help(zoo.evaluation.<name>).")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo evaluate``."""
    parser = run_parser(
        "zoo evaluate",
        __doc__,
        "a checkpoint of that run (omit: initial weights)",
        epilog=_protocols_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--evals", nargs="+", required=True, help="evaluation configs or suites")
    parser.add_argument("--output", default="results", help="folder for results.json/results.md")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--limit_batches", type=int, help="at most this many batches per split (smoke runs)"
    )
    parser.add_argument(
        "--paper_row", help="the paper's row to compare with (default: the model's class name)"
    )
    parser.add_argument(
        "--keep_going", action="store_true", help="record a failing evaluation and go on"
    )
    parser.add_argument("--wandb_project", help="also log the table to this W&B project (offline)")
    parser.add_argument(
        "--wandb_online", action="store_true", help="log to W&B online, not offline"
    )
    return parser


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run ``zoo evaluate`` with ``argv`` (default: the command line); returns the rows."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    try:
        evaluations = load_evaluations(args.evals)  # every config checked before any work
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    cli = build_from_configs(args.config, args.ckpt_path)
    model = cli.model
    ckpt_path = str(cli.ckpt_path) if cli.ckpt_path is not None else None  # ``last`` resolved
    header = {
        "model": args.paper_row or type(model).__name__,
        "config": ", ".join(args.config),
        "checkpoint": ckpt_path or "(initial weights)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    rows = evaluate(
        model,
        evaluations,
        args.output,
        ckpt_path,
        args.device,
        args.limit_batches,
        args.keep_going,
        header,
        args.paper_row,
    )
    if args.wandb_project:
        log_to_wandb(rows, header, args.wandb_project, args.output, args.wandb_online)
    print(markdown_table(rows, header))
    print(f"wrote {Path(args.output) / 'results.md'} and results.json")
    shift = geo_shift_table({header["model"]: rows}, header)
    if shift is not None:  # evaluations run on the in-region and the held-out split
        atomic_write_text(Path(args.output) / "geo_shift.md", shift)
        print(shift)
        print(f"wrote {Path(args.output) / 'geo_shift.md'}")
    return rows
