"""``zoo export``: a trained model as a self-contained folder, LoRA adapters merged in.

    zoo export --config configs/aquila.yaml --ckpt_path runs/.../last.ckpt --output export/
    zoo export --config configs/aquila.yaml --ckpt_path last --output export/ --format hf \\
        --results results/results.json --license apache-2.0 --push_to_hub org/aquila-rs

writes the folder of :func:`zoo.pretrained.save_pretrained` (``model.safetensors`` with every
weight, LoRA folded into the LLM and a sharded FSDP checkpoint folder consolidated first;
``config.json``, ``preprocessor_config.json``, the tokenizer's files and ``config.yaml``, the
resolved config that rebuilds the model), each file atomically. ``--format hf`` adds the
``README.md`` model card (:mod:`zoo.hub`); ``--push_to_hub`` uploads the folder to the Hugging
Face Hub (the only networked step). ``python -m zoo.export`` is an alias.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning import LightningModule

from zoo.hub import push_folder, read_results, write_card
from zoo.main import build_from_configs, run_parser
from zoo.pretrained import WEIGHTS_FILE, save_pretrained

__all__ = ["build_parser", "export_model", "main"]


def export_model(model: LightningModule, output: str | Path, config: str | None = None) -> Path:
    """Write a model's self-contained folder (LoRA merged); returns the weights' path.

    Args:
        model: the trained model.
        output: the folder (created).
        config: the resolved training config (YAML); default the model's ``training_config``.

    Returns:
        ``output/model.safetensors``.
    """
    return save_pretrained(model, output, config) / WEIGHTS_FILE


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo export``.

    Returns:
        The parser.
    """
    parser = run_parser(
        "zoo export",
        __doc__,
        "a checkpoint of that run (or last)",
        ckpt_required=True,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="the export folder")
    parser.add_argument(
        "--format",
        choices=["zoo", "hf"],
        default="zoo",
        help="hf: also write the README.md model card (implied by --push_to_hub)",
    )
    parser.add_argument("--results", help="zoo evaluate's results.json, for the card")
    parser.add_argument("--license", help="the weights' license id on the Hub (apache-2.0, ...)")
    parser.add_argument("--push_to_hub", metavar="ORG/NAME", help="upload the folder to the Hub")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument("--token", help="Hub token (default HF_TOKEN or hf auth login's)")
    return parser


def main(argv: list[str] | None = None) -> Path:
    """Run ``zoo export`` with ``argv`` (default: the command line).

    Args:
        argv: the arguments.

    Returns:
        The weights' path (``<output>/model.safetensors``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    card = args.format == "hf" or args.push_to_hub is not None
    if not card and (args.results or args.license):
        parser.error("--results and --license go into the model card: add --format hf")
    if args.push_to_hub is not None and args.push_to_hub.count("/") != 1:
        parser.error(f"--push_to_hub {args.push_to_hub!r}: give the Hub repository as org/name")
    if args.results is not None:
        try:
            read_results(args.results)  # checked before the model is built
        except ValueError as error:
            parser.error(str(error))
    cli = build_from_configs(args.config, args.ckpt_path)
    model = cli.model
    if getattr(model, "training_config", None) is None:
        model.training_config = cli.parser.dump(cli.config)
    path = export_model(model, args.output)
    print(f"wrote {args.output} ({path.name}, config.json, tokenizer and preprocessor files)")
    if card:
        card_path = write_card(
            args.output, results=args.results, license=args.license, repo_id=args.push_to_hub
        )
        print(f"wrote {card_path}")
    if args.push_to_hub is not None:
        private = True if args.private else None
        url = push_folder(args.output, args.push_to_hub, token=args.token, private=private)
        print(f"pushed to {url}")
    return path


if __name__ == "__main__":
    main()
