"""``zoo stats``: per-band normalization statistics of a config's training data, stored beside it.

    zoo stats --config configs/flavars_multispectral.yaml
    zoo stats --config configs/data/images.yaml --data.init_args.root my_tifs \\
        --data.init_args.bands=[1,2,3,4]

Reads the data's training split with its bands (a progress bar), and writes ``band_stats.json``
into the data's root (:mod:`zoo.data.statistics`). A datamodule with the same bands and no
``mean`` / ``std`` of its own then uses it and says so; the model keeps it in its checkpoint.
Only the ``data`` section of the configs is read (a whole run config works).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser
from lightning import LightningDataModule

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo stats`` (``--data.*`` overrides pass through).

    Returns:
        The parser.
    """
    description = (__doc__ or "zoo stats").splitlines()[0].replace("``", "")
    parser = argparse.ArgumentParser(prog="zoo stats", description=description)
    parser.add_argument("--config", action="append", required=True, help="config(s) with data")
    parser.add_argument("--num_workers", type=int, default=0, help="data-loading processes")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def build_datamodule(configs: list[str], overrides: list[str]) -> LightningDataModule:
    """The ``data`` of the configs (composed left to right) and the overrides, instantiated.

    Args:
        configs: YAML files; their ``data`` sections are read.
        overrides: ``--data.init_args.<key>=<value>`` arguments.

    Returns:
        The datamodule.

    Raises:
        ValueError: no config has a ``data`` section, or an override is not a data argument.
    """
    import zoo.main  # noqa: F401  (registers the datamodules' short names)

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    cfg = None
    for path in configs:
        data = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("data")
        if data is not None:
            cfg = parser.parse_object({"data": data}, cfg_base=cfg)
    if cfg is None:
        raise ValueError(f"none of {configs} has a 'data' section")
    bad = [a for a in overrides if not a.startswith("--data.")]
    if bad:
        raise ValueError(f"zoo stats takes only --data.* overrides, got {bad}")
    if overrides:
        cfg = parser.parse_args(overrides, namespace=cfg)
    return parser.instantiate_classes(cfg).data


def main(argv: list[str] | None = None) -> Path:
    """Run ``zoo stats``.

    Args:
        argv: the arguments after ``stats``.

    Returns:
        The written statistics file.
    """
    from zoo.data.statistics import write_statistics

    args, overrides = build_parser().parse_known_args(argv)
    datamodule = build_datamodule(args.config, overrides)
    datamodule.prepare_data()  # the embedded dataset is written on first use
    path = write_statistics(datamodule, args.num_workers, progress=not args.no_progress)
    print(f"wrote per-band statistics to {path}")
    return path


if __name__ == "__main__":
    main()
