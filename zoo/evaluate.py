"""Evaluate a checkpoint the way the papers do, over a list of evaluation configs.

    python -m zoo.evaluate --config configs/flavars.yaml --ckpt_path runs/.../last.ckpt \\
        --evals configs/eval/flavars/embedded.yaml --output results/flavars

``--config`` is the run's own config (it rebuilds the model and its tokenizer), ``--ckpt_path``
the Lightning checkpoint to load (``weights_only=True``). Each evaluation config is a YAML::

    name: EuroSAT k-NN              # the row label in the table
    protocol: knn                   # see PROTOCOLS below
    data:                           # any zoo datamodule, as in a training config
      class_path: zoo.data.scenes.EuroSATScenesDataModule
      init_args: {root: data/eurosat}
    options: {k: 20}                # protocol settings (optional)
    paper:                          # published numbers (percent) per model class (optional)
      FLAVARS: {knn_acc: 92.1}      #   a flat {metric: value} mapping applies to any model
    source: FLAVARS (arXiv 2501.08490), Table 2

or a suite, ``evaluations: [a.yaml, b.yaml]`` (paths relative to the suite file). The command
writes ``results.json`` and ``results.md`` in ``--output`` after every evaluation (atomically), so
a failure later in the list loses nothing. Values are percentages (x100) as the papers print
them.

Protocols (``image`` features are the backbone's pooled features; FLAVARS' embeddings for the
text-aware protocols):

* ``knn``: frozen features, train split as the bank, test split as queries; cosine k-NN with
  k = 20 and DINO weighting (FLAVARS).
* ``linear_probe``: multinomial logistic regression on frozen train features, L2 chosen on a
  held-out slice of train (CLIP), test accuracy.
* ``zero_shot``: class-name prompts through the text encoder (prompt ensembling), test split.
* ``retrieval``: image-text recall@1/5/10 in both directions on the test split, every caption
  of an image counting (RSICD protocol).
* ``segmentation``: UPerNet (segmentation-models-pytorch) on the checkpoint's image encoder,
  frozen or fine-tuned (``options.freeze_encoder``), fit on train, mIoU on test (FLAVARS,
  SpaceNet1).
* ``test``: the model's own test loop (captioning BLEU/METEOR/ROUGE-L/CIDEr, VQA accuracy per
  question type and their average, over ``options.average_over`` when given; referring
  mIoU/cIoU).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import LightningDataModule, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from zoo.metrics.generation import GenerationMetrics

__all__ = ["PROTOCOLS", "Evaluation", "evaluate", "load_evaluations", "main", "write_results"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES = [
    "a satellite image of {}.",
    "an aerial image of {}.",
    "a remote sensing image of {}.",
    "a satellite photo of a {}.",
    "an aerial photo of the {}.",
]
_FIELDS = {"name", "protocol", "data", "options", "paper", "source"}


@dataclass
class Evaluation:
    """One evaluation: a protocol over a datamodule, with the paper's numbers beside ours."""

    name: str
    protocol: str
    data: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    path: str = ""

    def paper_numbers(self, model: str) -> dict[str, float]:
        """The published numbers for ``model`` (a class name), or the flat mapping."""
        if any(isinstance(v, dict) for v in self.paper.values()):
            return dict(self.paper.get(model) or {})
        return dict(self.paper)


# ------------------------------------------------------------------------------ configs
def load_evaluations(paths: list[str | Path]) -> list[Evaluation]:
    """Read evaluation configs (suites expanded in order); errors name the file and the field."""
    out: list[Evaluation] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"evaluation config {path} does not exist")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise ValueError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(spec, dict):
            raise ValueError(f"{path}: expected a mapping with 'protocol' and 'data' (or 'evaluations')")
        if "evaluations" in spec:
            if set(spec) - {"evaluations", "name"}:
                raise ValueError(f"{path}: a suite holds only 'evaluations' (and 'name')")
            out += load_evaluations([path.parent / p for p in spec["evaluations"]])
            continue
        unknown = set(spec) - _FIELDS
        if unknown:
            raise ValueError(f"{path}: unknown field(s) {sorted(unknown)}; expected {sorted(_FIELDS)}")
        for key in ("protocol", "data"):
            if key not in spec:
                raise ValueError(f"{path}: missing field '{key}'")
        if spec["protocol"] not in PROTOCOLS:
            raise ValueError(
                f"{path}: protocol {spec['protocol']!r} is not one of {sorted(PROTOCOLS)}"
            )
        allowed = protocol_options(spec["protocol"])
        unknown = set(spec.get("options") or {}) - allowed
        if unknown:
            raise ValueError(
                f"{path}: unknown option(s) {sorted(unknown)} for protocol "
                f"{spec['protocol']!r}; it takes {sorted(allowed)}"
            )
        paper = spec.get("paper") or {}
        flat = [paper] if not any(isinstance(v, dict) for v in paper.values()) else paper.values()
        if not isinstance(paper, dict) or not all(
            isinstance(m, dict) and all(isinstance(v, (int, float)) for v in m.values()) for m in flat
        ):
            raise ValueError(
                f"{path}: 'paper' maps metric names to numbers, or model class names to such "
                f"mappings; got {paper}"
            )
        out.append(Evaluation(
            name=str(spec.get("name", path.stem)), protocol=spec["protocol"], data=spec["data"],
            options=dict(spec.get("options") or {}), paper=paper,
            source=str(spec.get("source", "")), path=str(path),
        ))
    return out


def protocol_options(protocol: str) -> set[str]:
    """The ``options`` a protocol accepts (those of the function or class it calls)."""
    import inspect

    if protocol == "linear_probe":
        from zoo.evaluation.probes import linear_probe

        taken = {"train_features", "train_labels", "test_features", "test_labels", "num_classes"}
        return set(inspect.signature(linear_probe).parameters) - taken
    if protocol == "segmentation":
        from zoo.evaluation.segmentation import UPerNetSegmentation

        taken = {"image_encoder", "image_size", "image_checkpoint", "num_classes", "class_names",
                 "feature_indices"}
        return (set(inspect.signature(UPerNetSegmentation.__init__).parameters) - taken - {"self"}
                | {"max_epochs"})
    return {"knn": {"k", "temperature"}, "zero_shot": {"templates"}, "retrieval": set(),
            "test": {"average_over"}}[protocol]


def build_datamodule(evaluation: Evaluation, image_size: int | None) -> LightningDataModule:
    """Instantiate ``data`` like the CLI does; the model's image size unless the config sets one."""
    from jsonargparse import ArgumentParser

    import zoo.main  # noqa: F401  (registers the datamodules' short names)

    data = json.loads(json.dumps(evaluation.data))  # a deep copy
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    init_args = data.setdefault("init_args", {})
    if image_size is not None and "image_size" not in init_args:
        probe = parser.parse_object({"data": {"class_path": data["class_path"]}})
        if "image_size" in probe.data.init_args:
            init_args["image_size"] = image_size
    try:
        config = parser.parse_object({"data": data})
    except Exception as error:  # jsonargparse raises its own ArgumentError
        raise ValueError(f"{evaluation.path}: invalid 'data': {error}") from error
    return parser.instantiate_classes(config).data


# ---------------------------------------------------------------------------- features
@dataclass
class Context:
    """What every protocol gets: the model, where it runs, and the run's settings."""

    model: LightningModule
    device: torch.device
    ckpt_path: str | None
    limit_batches: int | None = None
    output: Path = Path("results")


def _batches(ctx: Context, dm: LightningDataModule, split: str, desc: str) -> Iterator[dict[str, Any]]:
    """Normalised batches of one split on the model's device, with a progress bar."""
    dm.setup("fit" if split == "train" else "test")
    # Not dm.train_dataloader(): evaluation needs every sample once, unshuffled (torchgeo's
    # training loaders shuffle and drop the last incomplete batch).
    dataset = dm.train_dataset if split == "train" else dm.test_dataset
    loader = DataLoader(
        dataset, batch_size=dm.batch_size, shuffle=False, num_workers=dm.num_workers,
        collate_fn=getattr(dm, "collate_fn", None),
    )
    total = len(loader) if ctx.limit_batches is None else min(len(loader), ctx.limit_batches)
    for i, batch in enumerate(tqdm(loader, desc=desc, total=total, leave=False)):
        if i == total:
            break
        batch = {k: v.to(ctx.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        yield dm.on_after_batch_transfer(batch, 0)


def image_features(model: LightningModule, image: Tensor) -> Tensor:
    """Pooled backbone features ``B×D`` of any zoo model (FLAVARS' image encoder, a
    generator's vision tower: the deepest feature map averaged, or the timm head's pooling)."""
    if hasattr(model, "encode_image"):
        return model.encode_image(image)[0]
    vision = getattr(model, "vision", None)
    if vision is None:
        raise TypeError(f"{type(model).__name__} has no image encoder ('encode_image' or 'vision')")
    if hasattr(vision, "forward_head"):
        return vision.forward_head(vision.forward_features(image), pre_logits=True)
    return vision(image)[-1].mean(dim=(-2, -1))  # timm features_only


@torch.no_grad()
def _split_features(ctx: Context, dm: LightningDataModule, split: str) -> tuple[Tensor, Tensor]:
    features, labels = [], []
    for batch in _batches(ctx, dm, split, f"{split} features"):
        if "label" not in batch:
            raise ValueError(f"{type(dm).__name__} batches carry no 'label': not a scene dataset")
        features.append(image_features(ctx.model, batch["image"]).float().cpu())
        labels.append(batch["label"].cpu())
    if not features:
        raise ValueError(f"{type(dm).__name__}: the {split} split is empty")
    return torch.cat(features), torch.cat(labels)


def _num_classes(dm: LightningDataModule) -> int:
    names = list(getattr(dm, "class_names", None) or [])
    if len(names) < 2:
        raise ValueError(f"{type(dm).__name__} has no class_names: not a scene dataset")
    return len(names)


def _text_model(ctx: Context, protocol: str) -> LightningModule:
    model = ctx.model
    if not (hasattr(model, "encode_text") and hasattr(model, "tokenize")):
        raise ValueError(
            f"protocol {protocol!r} needs a text encoder; {type(model).__name__} has none "
            "(use knn, linear_probe or segmentation for its image encoder)"
        )
    return model


@torch.no_grad()
def _encode_texts(model: LightningModule, texts: list[str], batch_size: int = 256) -> Tensor:
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = model.tokenize(texts[start : start + batch_size])
        out.append(model.encode_text(tokens["input_ids"], tokens["attention_mask"]).float().cpu())
    return torch.cat(out)


# --------------------------------------------------------------------------- protocols
def run_knn(ctx: Context, ev: Evaluation, dm: LightningDataModule) -> dict[str, float]:
    from zoo.evaluation.probes import knn_accuracy

    train_x, train_y = _split_features(ctx, dm, "train")
    test_x, test_y = _split_features(ctx, dm, "test")
    k = int(ev.options.get("k", 20))
    acc = knn_accuracy(
        train_x, train_y, test_x, test_y, _num_classes(dm), k=min(k, len(train_x)),
        temperature=float(ev.options.get("temperature", 0.07)),
    )
    return {"knn_acc": float(acc)}


def run_linear_probe(ctx: Context, ev: Evaluation, dm: LightningDataModule) -> dict[str, float]:
    from zoo.evaluation.probes import linear_probe

    train_x, train_y = _split_features(ctx, dm, "train")
    test_x, test_y = _split_features(ctx, dm, "test")
    result = linear_probe(train_x, train_y, test_x, test_y, _num_classes(dm), **ev.options)
    return {"linear_probe_acc": float(result["accuracy"])}


@torch.no_grad()
def run_zero_shot(ctx: Context, ev: Evaluation, dm: LightningDataModule) -> dict[str, float]:
    from zoo.evaluation.probes import zero_shot_accuracy

    model = _text_model(ctx, "zero_shot")
    num_classes = _num_classes(dm)
    templates = list(ev.options.get("templates", DEFAULT_TEMPLATES))
    prompts = [t.format(c) for c in dm.class_names for t in templates]
    class_emb = _encode_texts(model, prompts).view(num_classes, len(templates), -1)
    images, labels = [], []
    for batch in _batches(ctx, dm, "test", "zero-shot"):
        images.append(model.encode_image(batch["image"])[1].float().cpu())
        labels.append(batch["label"].cpu())
    result = zero_shot_accuracy(torch.cat(images), class_emb, torch.cat(labels))
    return {f"zero_shot_{k}": float(v) for k, v in result.items()}


@torch.no_grad()
def run_retrieval(ctx: Context, ev: Evaluation, dm: LightningDataModule) -> dict[str, float]:
    from zoo.evaluation.retrieval import caption_retrieval

    model = _text_model(ctx, "retrieval")
    images, texts, owner = [], [], []
    for batch in _batches(ctx, dm, "test", "retrieval"):
        offset = sum(len(x) for x in images)
        images.append(model.encode_image(batch["image"])[1].float().cpu())
        captions = batch.get("references") or [[c] for c in batch["caption"]]
        for i, refs in enumerate(captions):
            texts += list(refs)
            owner += [offset + i] * len(refs)
    text_emb = _encode_texts(model, texts)
    result = caption_retrieval(torch.cat(images), text_emb, torch.tensor(owner))
    return {k: float(v) for k, v in result.items()}


def _trainer(ctx: Context, **kwargs: Any) -> Trainer:
    accelerator = "gpu" if ctx.device.type == "cuda" else "cpu"
    return Trainer(
        accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
        enable_model_summary=False, default_root_dir=str(ctx.output), **kwargs,
    )


def run_segmentation(ctx: Context, ev: Evaluation, dm: LightningDataModule) -> dict[str, float]:
    from zoo.evaluation.segmentation import UPerNetSegmentation

    hparams = ctx.model.hparams
    encoder = hparams.get("image_encoder") or hparams.get("vision_encoder")
    if encoder is None:
        raise ValueError(f"{type(ctx.model).__name__} names no image encoder in its hyper-parameters")
    options = dict(ev.options)
    max_epochs = int(options.pop("max_epochs", 10))
    seg = UPerNetSegmentation(
        image_encoder=encoder, image_size=int(hparams.get("image_size", 224)),
        image_checkpoint=ctx.ckpt_path, num_classes=len(dm.class_names),
        feature_indices=hparams.get("feature_stages"),  # Aquila keeps only these stages
        class_names=list(dm.class_names), **options,
    )
    limit = ctx.limit_batches
    trainer = _trainer(
        ctx, max_epochs=max_epochs, num_sanity_val_steps=0,
        limit_train_batches=limit, limit_val_batches=limit, limit_test_batches=limit,
    )
    trainer.fit(seg, datamodule=dm)
    (result,) = trainer.test(seg, datamodule=dm, verbose=False)
    return _strip(result, "test_")


def run_test(ctx: Context, ev: Evaluation, dm: LightningDataModule) -> dict[str, float]:
    model = ctx.model
    types = getattr(dm, "question_types", None)
    metrics = getattr(model, "metrics", None)
    if types and isinstance(metrics, nn.ModuleDict) and isinstance(metrics["test"], GenerationMetrics):
        # The data's question types (RSVQA's), so accuracy is reported per type.
        model.metrics = model.generation_metrics(list(types)).to(ctx.device)
    trainer = _trainer(ctx, limit_test_batches=ctx.limit_batches)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    result = _strip(result, "test_")
    types_seen = [k.removeprefix("vqa_accuracy_") for k in result if k.startswith("vqa_accuracy_")]
    average_over = list(ev.options.get("average_over") or types_seen)
    missing = [t for t in average_over if t not in types_seen]
    if missing:
        raise ValueError(
            f"{ev.path}: options.average_over names question types without answers {missing}; "
            f"the test split has {types_seen}"
        )
    if average_over:
        values = [result[f"vqa_accuracy_{t}"] for t in average_over]
        result["vqa_average_accuracy"] = sum(values) / len(values)
    return result


def _strip(result: dict[str, Any], prefix: str) -> dict[str, float]:
    return {k.removeprefix(prefix): float(v) for k, v in result.items() if k.startswith(prefix)}


PROTOCOLS: dict[str, Callable[[Context, Evaluation, LightningDataModule], dict[str, float]]] = {
    "knn": run_knn,
    "linear_probe": run_linear_probe,
    "zero_shot": run_zero_shot,
    "retrieval": run_retrieval,
    "segmentation": run_segmentation,
    "test": run_test,
}
#: Metrics that are not fractions (not shown x100).
_RAW = {"loss"}


# ----------------------------------------------------------------------------- running
def evaluate(
    model: LightningModule,
    evaluations: list[Evaluation],
    output: str | Path,
    ckpt_path: str | None = None,
    device: str = "auto",
    limit_batches: int | None = None,
    keep_going: bool = False,
    header: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run every evaluation on ``model``; write the table after each one; return its rows."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = Context(model.to(device).eval(), torch.device(device), ckpt_path, limit_batches, Path(output))
    image_size = model.hparams.get("image_size")
    tokenizer = getattr(model, "tokenizer", None)
    rows: list[dict[str, Any]] = []
    for n, ev in enumerate(evaluations, start=1):
        log.info("evaluation %d/%d: %s (%s)", n, len(evaluations), ev.name, ev.protocol)
        try:
            dm = build_datamodule(ev, image_size)
            if tokenizer is not None and hasattr(dm, "tokenizer"):
                dm.tokenizer = tokenizer  # the model's vocabulary, not one built from this data
            dm.prepare_data()
            metrics = PROTOCOLS[ev.protocol](ctx, ev, dm)
            error = None
        except Exception as exc:
            if not keep_going:
                raise
            log.error("evaluation %s failed: %s", ev.name, exc)
            metrics, error = {}, f"{type(exc).__name__}: {exc}"
        ctx.model.eval()
        rows += _rows(ev, metrics, error, ev.paper_numbers(type(model).__name__))
        write_results(rows, output, header)
    return rows


def _rows(
    ev: Evaluation, metrics: dict[str, float], error: str | None, published: dict[str, float]
) -> list[dict[str, Any]]:
    base = {"evaluation": ev.name, "protocol": ev.protocol, "config": ev.path, "source": ev.source}
    if error is not None:
        return [{**base, "metric": "error", "ours": None, "paper": None, "error": error}]
    rows = []
    for key in sorted(set(metrics) | set(published), key=lambda k: (k not in published, k)):
        value = metrics.get(key)
        if value is not None and key not in _RAW and not key.endswith("loss"):
            value = 100.0 * value
        paper = published.get(key)
        delta = None if value is None or paper is None or math.isnan(value) else value - paper
        rows.append({**base, "metric": key, "ours": value, "paper": paper, "delta": delta})
    return rows


def write_results(rows: list[dict[str, Any]], output: str | Path, header: dict[str, Any] | None = None) -> None:
    """``results.json`` and ``results.md`` in ``output`` (each replaced atomically)."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    payload = {**(header or {}), "results": rows}
    _atomic_write(output / "results.json", json.dumps(payload, indent=2) + "\n")
    _atomic_write(output / "results.md", markdown_table(rows, header))


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def markdown_table(rows: list[dict[str, Any]], header: dict[str, Any] | None = None) -> str:
    """The results as a markdown table: ours beside the paper's number and the difference."""
    lines = ["# Evaluation results", ""]
    for key, value in (header or {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += [
        "", "Values in percent (x100). Paper numbers come from the cited tables; the difference "
        "is ours minus the paper's.", "",
        "| evaluation | protocol | metric | ours | paper | difference | source |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ours = r.get("error") if r["metric"] == "error" else _fmt(r["ours"])
        delta = "" if r.get("delta") is None else f"{r['delta']:+.2f}"
        lines.append(
            f"| {r['evaluation']} | {r['protocol']} | {r['metric']} | {ours} | "
            f"{_fmt(r['paper'])} | {delta} | {r['source']} |"
        )
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def log_to_wandb(
    rows: list[dict[str, Any]], header: dict[str, Any], project: str, output: str | Path,
    online: bool = False,
) -> Path:
    """Log the table (and each value as a summary metric) as one W&B run, offline by default."""
    import wandb

    columns = ["evaluation", "protocol", "metric", "ours", "paper", "delta", "source"]
    run = wandb.init(
        project=project, dir=str(output), job_type="evaluation", config=header,
        mode="online" if online else "offline", name=f"eval-{header.get('model', 'model')}",
    )
    run.log({"results": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
    run.summary.update({
        f"{r['evaluation']}/{r['metric']}": r["ours"] for r in rows if r.get("ours") is not None
    })
    run.finish()
    return Path(run.dir)


def load_model(configs: list[str], ckpt_path: str | None) -> LightningModule:
    """Rebuild the run's model from its config(s) and load the checkpoint's weights."""
    from zoo.main import main as zoo_main

    args = [a for c in configs for a in ("--config", c)]
    argv0, sys.argv = sys.argv, [sys.argv[0]]
    try:
        cli = zoo_main([*args, "--trainer.logger=false"], run=False)
    finally:
        sys.argv = argv0
    model = cli.model
    if ckpt_path is None:
        log.warning("no --ckpt_path: evaluating the model as its config initialises it")
        return model
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint.get("state_dict", checkpoint))
    return model


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="the run's config(s)")
    parser.add_argument("--ckpt_path", help="a Lightning checkpoint of that run (omit: initial weights)")
    parser.add_argument("--evals", nargs="+", required=True, help="evaluation configs or suites")
    parser.add_argument("--output", default="results", help="folder for results.json/results.md")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--limit_batches", type=int, help="at most this many batches per split (smoke runs)")
    parser.add_argument("--keep_going", action="store_true", help="record a failing evaluation and go on")
    parser.add_argument("--wandb_project", help="also log the table to this W&B project (offline)")
    parser.add_argument("--wandb_online", action="store_true", help="log to W&B online, not offline")
    args = parser.parse_args(argv)
    if args.ckpt_path is not None and not Path(args.ckpt_path).is_file():
        parser.error(f"--ckpt_path {args.ckpt_path} does not exist")
    from zoo.main import configure_logging

    configure_logging()
    evaluations = load_evaluations(args.evals)  # every config checked before any work
    model = load_model(args.config, args.ckpt_path)
    header = {
        "model": type(model).__name__, "config": ", ".join(args.config),
        "checkpoint": args.ckpt_path or "(initial weights)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    rows = evaluate(
        model, evaluations, args.output, args.ckpt_path, args.device, args.limit_batches,
        args.keep_going, header,
    )
    if args.wandb_project:
        log_to_wandb(rows, header, args.wandb_project, args.output, args.wandb_online)
    print(markdown_table(rows, header))
    print(f"wrote {Path(args.output) / 'results.md'} and results.json")
    return rows


if __name__ == "__main__":
    main()
