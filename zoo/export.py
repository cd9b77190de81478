"""Export a trained model as plain safetensors weights, LoRA adapters merged in.

    python -m zoo.export --config configs/aquila.yaml --ckpt_path runs/.../last.ckpt --output export/

writes ``export/model.safetensors`` (every weight of the LightningModule, LoRA folded into the
LLM) and ``export/config.yaml`` (the resolved config that rebuilds the model).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from lightning import LightningModule
from safetensors.torch import save_model

__all__ = ["export_model", "main"]


def export_model(model: LightningModule, output: str | Path) -> Path:
    """Merge LoRA adapters (if any) and save the weights; returns the safetensors path."""
    if hasattr(model, "merge_lora"):
        model.merge_lora()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / "model.safetensors"
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp))  # drops tied duplicates (e.g. a tied LM head)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="the run's config(s)")
    parser.add_argument("--ckpt_path", required=True, help="a Lightning checkpoint of that run")
    parser.add_argument("--output", required=True, help="folder for model.safetensors")
    args = parser.parse_args(argv)
    ckpt = Path(args.ckpt_path)
    if not ckpt.is_file():
        parser.error(f"--ckpt_path {ckpt} does not exist")
    from zoo.main import main as zoo_main

    configs = [a for c in args.config for a in ("--config", c)]
    argv0, sys.argv = sys.argv, [sys.argv[0]]
    try:
        cli = zoo_main([*configs, "--trainer.logger=false"], run=False)
    finally:
        sys.argv = argv0
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    cli.model.load_state_dict(state)
    path = export_model(cli.model, args.output)
    cli.parser.save(cli.config, Path(args.output) / "config.yaml", overwrite=True)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
