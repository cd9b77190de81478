"""``zoo compare``: an ablation suite's variants over its evaluations, printed side by side.

    zoo compare --suite configs/eval/suites/flavars_le_ablation.yaml \\
        --ckpt_path "FLAVARS +LE=runs/.../le.ckpt" --ckpt_path "FLAVARS=runs/.../no_le.ckpt" \\
        --output results/flavars-le-ablation

The suite names its ``variants`` (:class:`~zoo.evaluation.config.Variant`: a name and the run's
configs) beside its ``evaluations``. Each variant's model is rebuilt from its configs and the
checkpoint given for its name (none: its initial weights), evaluated like ``zoo evaluate``
(``<output>/<variant>/results.{json,md}``), then dropped before the next one is built; the
joined table, a column per variant, goes to ``<output>/comparison.{json,md}`` and is printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from zoo.evaluation.config import load_evaluations, load_variants
from zoo.evaluation.geo_shift import geo_shift_table
from zoo.evaluation.results import side_by_side, side_by_side_table
from zoo.evaluation.runner import evaluate
from zoo.io import atomic_write_text
from zoo.main import build_from_configs, configure_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo compare``."""
    parser = argparse.ArgumentParser(
        prog="zoo compare",
        description=__doc__.splitlines()[0].replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", required=True, help="a suite with variants and evaluations")
    parser.add_argument(
        "--ckpt_path",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a variant's checkpoint (repeat per variant; a variant without one: initial weights)",
    )
    parser.add_argument("--output", default="results", help="folder for the tables")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--limit_batches", type=int, help="at most this many batches per split (smoke runs)"
    )
    parser.add_argument(
        "--keep_going", action="store_true", help="record a failing evaluation and go on"
    )
    return parser


def _folder(name: str) -> str:
    """A variant's sub-folder: its name with anything but letters, digits, ``.-_`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "variant"


def _checkpoints(
    parser: argparse.ArgumentParser, given: list[str], names: list[str]
) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or name not in names:
            parser.error(
                f"--ckpt_path {item!r}: write NAME=PATH with NAME one of the suite's variants {names}"
            )
        if not Path(path).is_file():
            parser.error(f"--ckpt_path {item!r}: {path} does not exist")
        out[name] = path
    return out


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run ``zoo compare`` with ``argv``; returns each variant's rows by its name."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging()
    try:  # every config checked before any model is built
        variants = load_variants(args.suite)
        evaluations = load_evaluations([args.suite])
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    ckpts = _checkpoints(parser, args.ckpt_path, [v.name for v in variants])
    output = Path(args.output)
    runs: dict[str, list[dict[str, Any]]] = {}
    header: dict[str, Any] = {
        "suite": args.suite,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for variant in variants:
        ckpt = ckpts.get(variant.name)
        log.info("variant %s: %s, checkpoint %s", variant.name, ", ".join(variant.config), ckpt)
        model = build_from_configs(variant.config, ckpt).model
        run_header = {
            "model": variant.paper_row or variant.name,
            "config": ", ".join(variant.config),
            "checkpoint": ckpt or "(initial weights)",
            "date": header["date"],
        }
        runs[variant.name] = evaluate(
            model,
            evaluations,
            output / _folder(variant.name),
            ckpt,
            args.device,
            args.limit_batches,
            args.keep_going,
            run_header,
            variant.paper_row or variant.name,
        )
        header[variant.name] = f"{run_header['config']} @ {run_header['checkpoint']}"
        del model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    table = side_by_side_table(runs, header)
    atomic_write_text(output / "comparison.md", table)
    payload = {**header, "results": side_by_side(runs)}
    atomic_write_text(output / "comparison.json", json.dumps(payload, indent=2) + "\n")
    print(table)
    print(
        f"wrote {output / 'comparison.md'} and comparison.json (each variant's table under {output})"
    )
    shift = geo_shift_table(runs, header)
    if shift is not None:  # evaluations run on the in-region and the held-out split
        atomic_write_text(output / "geo_shift.md", shift)
        print(shift)
        print(f"wrote {output / 'geo_shift.md'}")
    return runs
