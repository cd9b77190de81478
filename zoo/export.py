"""``zoo export``: a trained model as plain safetensors weights, LoRA adapters merged in.

    zoo export --config configs/aquila.yaml --ckpt_path runs/.../last.ckpt --output export/

writes ``export/model.safetensors`` (every weight of the LightningModule, LoRA folded into the
LLM; a sharded FSDP checkpoint folder is consolidated first) and ``export/config.yaml`` (the
resolved config that rebuilds the model), each atomically.
``python -m zoo.export`` is an alias.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning import LightningModule
from safetensors.torch import save_model

from zoo.io import atomic_path, atomic_write_text
from zoo.main import build_from_configs, run_parser

__all__ = ["export_model", "main"]


def export_model(model: LightningModule, output: str | Path) -> Path:
    """Merge LoRA adapters (if any) and save the weights; returns the safetensors path."""
    if hasattr(model, "merge_lora"):
        model.merge_lora()
    path = Path(output) / "model.safetensors"
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))  # drops tied duplicates (e.g. a tied LM head)
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo export``."""
    parser = run_parser("zoo export", __doc__, "a checkpoint of that run", ckpt_required=True)
    parser.add_argument(
        "--output", required=True, help="folder for model.safetensors and config.yaml"
    )
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run ``zoo export`` with ``argv`` (default: the command line); returns the weights' path."""
    parser = build_parser()
    args = parser.parse_args(argv)
    cli = build_from_configs(args.config, args.ckpt_path)
    path = export_model(cli.model, args.output)
    atomic_write_text(Path(args.output) / "config.yaml", cli.parser.dump(cli.config))
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
