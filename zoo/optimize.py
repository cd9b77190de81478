"""``zoo optimize``: write the dataset of a data config as LitData shards (streaming).

    zoo optimize --config configs/flavars.yaml --output shards/embedded [--workers 4]
    zoo optimize --config configs/aquila.yaml --config configs/data/fit_rs.yaml \\
        --output s3://bucket/fit_rs --workers 16

The configs are composed as for ``zoo fit`` (a model config first, then a data config), so the
data gets the tokenizer the model would give it; only the datamodule is built (no weights are
loaded). Each split becomes ``<output>/<split>/`` (LitData's ``index.json`` and chunks, written
by :func:`litdata.optimize` with a progress bar and ``--workers`` processes, in the dataset's
order) and ``<output>/manifest.json`` says what they hold (:mod:`zoo.data.streaming`). Train
on them with ``--data.init_args.streaming <output>``.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import pickle
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import ConcatDataset, Subset

from zoo.data.streaming import (
    FORMAT_VERSION,
    MANIFEST,
    apply_recipe,
    decode_image,
    folder_checksum,
    is_remote,
    join,
    upload_folder,
    write_bytes,
)

__all__ = ["SampleEncoder", "datamodule_from_configs", "main", "write_shards"]

log = logging.getLogger(__name__)

#: Where a datamodule's samples carry no licence of their own, the manifest says this.
LICENCE_NOTE = (
    "These shards are a re-encoding of the source dataset's samples: they keep the source's "
    "licence and terms of use (see the datamodule's documentation and docs/datasets.md); the "
    "conversion grants nothing more."
)

#: The image files read while the sample being encoded was made: (path, decoded image).
_READ: list[tuple[Path, Tensor]] = []


def _install_recorder() -> None:
    """Wrap :func:`zoo.data.image_text.load_image` wherever the datasets imported it, so the
    encoder learns which file a sample's image came from (and can keep its encoded bytes)."""
    import sys

    from zoo.data import image_text

    original = image_text.load_image
    if getattr(original, "recording", False):
        return

    def load_image(path: Path, context: str = "", bands: Any = image_text.RGB) -> Tensor:
        image = original(path, context, bands)
        _READ.append((Path(path), image))
        return image

    load_image.recording = True  # type: ignore[attr-defined]
    for name, module in list(sys.modules.items()):
        if name.startswith("zoo.") and getattr(module, "load_image", None) is original:
            module.load_image = load_image  # type: ignore[attr-defined]


def _pad_colors(dataset: Any) -> list[list[float]]:
    """The pad colours of ``dataset`` and the datasets it is made of."""
    if isinstance(dataset, ConcatDataset):
        return [c for d in dataset.datasets for c in _pad_colors(d)]
    if isinstance(dataset, Subset):
        return _pad_colors(dataset.dataset)
    color = getattr(dataset, "pad_color", None)
    return [list(color)] if color is not None else []


def _array_bytes(image: Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, image.numpy(), allow_pickle=False)
    return buffer.getvalue()


class SampleEncoder:
    """Turn sample ``index`` of a dataset into the stored item (the ``fn`` of
    :func:`litdata.optimize`; picklable, so it runs in LitData's worker processes).

    The image is kept as its file's encoded bytes when the file's decoded pixels, padded and
    resized as a recipe says, equal the sample's image exactly (checked on every sample);
    otherwise (an image the dataset made some other way) as the array itself.

    Args:
        dataset: the split's map-style dataset (samples are dicts with ``image``).
        lengths: each sample's token count (conversations), else None.
    """

    def __init__(self, dataset: Any, lengths: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.lengths = None if lengths is None else list(lengths)
        self.pads: list[list[float] | None] = [None, *_pad_colors(dataset)]
        self.parent = os.getpid()

    def __call__(self, index: int) -> dict[str, Any]:
        """Encode one sample.

        Args:
            index: the sample's index.

        Returns:
            ``{"image": bytes, "fields": bytes, "length": int}``.

        Raises:
            TypeError: the sample is no dict with an ``image`` tensor.
        """
        if os.getpid() != self.parent and torch.get_num_threads() > 1:
            # A forked LitData worker: the parent's OpenMP pool did not come along, and a
            # parallel region would wait for it forever. The workers are the parallelism.
            torch.set_num_threads(1)
        _install_recorder()
        _READ.clear()
        sample = self.dataset[index]
        if not isinstance(sample, dict) or not isinstance(sample.get("image"), Tensor):
            raise TypeError(
                f"sample {index} of {type(self.dataset).__name__} is not a dict with an 'image' "
                "tensor: zoo optimize converts the zoo's datasets (the batch contract)"
            )
        image = sample["image"]
        # Tensors as numpy arrays: a pickled tensor carries ~1 kB of overhead, an array ~0.1.
        fields = {
            k: ("__tensor__", v.numpy()) if isinstance(v, Tensor) else v
            for k, v in sample.items()
            if k != "image"
        }
        stored, recipe = None, None
        if len(_READ) == 1:
            path = _READ[0][0]
            encoded = path.read_bytes()
            try:
                # What the stream will decode, not what the dataset read: a band choice (or
                # a GeoTIFF) that the stream's decoder does not reproduce is stored as array.
                decoded = decode_image(encoded)
            except RuntimeError:
                decoded = None
            for pad in self.pads if decoded is not None else []:
                candidate = {"pad": pad, "size": list(image.shape[-2:])}
                if torch.equal(apply_recipe(decoded, candidate), image):
                    stored, recipe = encoded, candidate
                    break
        if stored is None:
            stored = _array_bytes(image)
        fields["__image__"] = recipe
        length = -1 if self.lengths is None else int(self.lengths[index])
        return {"image": stored, "fields": pickle.dumps(fields), "length": length}


def datamodule_from_configs(configs: Sequence[str], overrides: Sequence[str] = ()) -> Any:
    """The datamodule of composed configs, with what the model gives it (its LLM, LLaVA or
    FLAVA folder: tokenizer, conversation format), the model itself not built.

    Args:
        configs: the config files, composed left to right.
        overrides: further ``--key=value`` arguments.

    Returns:
        The datamodule and its resolved config (``class_path`` / ``init_args``).
    """
    from zoo.errors import ZooArgumentParser
    from zoo.main import ZooCLI

    class DataOnly(ZooCLI):
        def instantiate_classes(self) -> None:
            from jsonargparse import Namespace

            parser = ZooArgumentParser()
            parser.add_subclass_arguments(LightningDataModule, "data", required=True)
            init = parser.instantiate_classes(Namespace(data=self.config["data"]))
            self.datamodule = init["data"]

        def after_instantiate_classes(self) -> None:
            pass

    args = [*(a for c in configs for a in ("--config", str(c))), *overrides]
    cli = DataOnly(
        None,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=None,
        parser_kwargs={"parser_mode": "omegaconf"},
        parser_class=ZooArgumentParser,
        auto_configure_optimizers=False,
        args=[*args, "--trainer.logger=false"],
        run=False,
    )
    return cli.datamodule, cli.config["data"].as_dict()


def _split_datasets(datamodule: Any, splits: Sequence[str]) -> dict[str, Any]:
    """The datamodule's map-style dataset of each split."""
    datamodule.prepare_data()
    found: dict[str, Any] = {}
    stages = {"train": ("fit", "train_dataset"), "val": ("validate", "val_dataset")}
    stages["test"] = ("test", "test_dataset")
    for split in splits:
        if split not in stages:
            raise ValueError(f"--splits: {split!r} is none of {sorted(stages)}")
        stage, attribute = stages[split]
        datamodule.setup(stage)
        found[split] = getattr(datamodule, attribute)
    return found


def _tokenization(datamodule: Any) -> dict[str, Any]:
    tokenizer = datamodule.tokenizer
    return {
        "tokenizer": getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "short_answer_tasks": sorted(datamodule.short_answer_tasks),
        "max_length": datamodule.max_length,
        "conversation": datamodule.conversation,
    }


def write_shards(
    datamodule: Any,
    output: str,
    workers: int = 1,
    splits: Sequence[str] = ("train", "val", "test"),
    source: dict[str, Any] | None = None,
    chunk_bytes: str = "64MB",
) -> dict[str, Any]:
    """Write the splits of ``datamodule`` as LitData shards and the manifest.

    Args:
        datamodule: a zoo datamodule (its ``setup`` builds the split datasets).
        output: a local folder or an ``s3://`` URI (written through a local staging folder).
        workers: LitData's worker processes.
        splits: the splits to write.
        source: what the manifest records as the source (the configs and the data config).
        chunk_bytes: the chunks' size limit.

    Returns:
        The manifest.
    """
    from litdata import optimize

    from zoo.data.conversations import ConversationDataset

    datasets = _split_datasets(datamodule, splits)
    remote = is_remote(output)
    staging = Path(tempfile.mkdtemp(prefix="zoo-optimize-")) if remote else Path(output)
    if not remote and (staging / MANIFEST).exists():
        (staging / MANIFEST).unlink()  # a folder being rewritten is not a shard folder
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "source": {**(source or {}), "datamodule": type(datamodule).__name__},
        "dataset_root": str(getattr(datamodule, "dataset_root", "")),
        "licence": getattr(datamodule, "licence", None) or LICENCE_NOTE,
        "splits": {},
    }
    if getattr(datamodule, "tokenizer_name", "unset") is None:  # the word-level tokenizer
        manifest["vocabulary"] = datamodule.vocabulary()
    names = getattr(datamodule, "class_names", None)
    if names is not None:
        manifest["class_names"] = list(names)
    try:
        for split, dataset in datasets.items():
            count = len(dataset)
            if count == 0:
                raise ValueError(f"the {split} split has no samples: leave it out with --splits")
            entry: dict[str, Any] = {"count": count}
            lengths = None
            if isinstance(dataset, ConversationDataset) and hasattr(
                datamodule, "short_answer_tasks"
            ):
                entry["tokenization"] = _tokenization(datamodule)
                lengths = dataset.lengths(
                    datamodule.tokenizer,
                    datamodule.short_answer_tasks,
                    datamodule.max_length,
                    datamodule.conversation,
                )
                entry["lengths"] = lengths
            encoder = SampleEncoder(dataset, lengths)
            first = encoder(0)  # in this process: a bad sample is reported before any worker
            first_fields = pickle.loads(first["fields"])  # noqa: S301
            entry["keys"] = sorted(["image", *(k for k in first_fields if k != "__image__")])
            entry["image_storage"] = "file bytes" if first_fields["__image__"] else "array"
            folder = staging / split
            if folder.exists():
                shutil.rmtree(folder)
            log.info("zoo optimize: %s split, %d samples -> %s", split, count, join(output, split))
            optimize(
                fn=encoder,
                inputs=list(range(count)),
                output_dir=str(folder),
                num_workers=max(1, min(workers, count)),
                chunk_bytes=chunk_bytes,
                keep_data_ordered=True,  # each worker a contiguous slice: the dataset's order
                reorder_files=False,
                mode="overwrite",
                start_method="fork",  # fast to start; SampleEncoder keeps OpenMP out of it
                verbose=True,
            )
            entry["checksum"] = "sha256:" + folder_checksum(folder)
            entry["bytes"] = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            manifest["splits"][split] = entry
        text = json.dumps(manifest, indent=1, default=str)
        if remote:
            upload_folder(staging, output)
        write_bytes(join(output, MANIFEST), text.encode())  # last: a complete folder
    finally:
        if remote:
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``zoo optimize``.

    Args:
        argv: the arguments after ``optimize`` (None: ``sys.argv``).

    Returns:
        The manifest written.
    """
    import argparse
    import sys

    from zoo.main import configure_logging

    configure_logging()
    parser = argparse.ArgumentParser(
        prog="zoo optimize", description=__doc__.splitlines()[0].replace("``", "")
    )
    parser.add_argument("--config", action="append", required=True, help="config(s), composed")
    parser.add_argument("--output", required=True, help="a folder or an s3:// URI")
    parser.add_argument("--workers", type=int, default=1, help="LitData worker processes")
    parser.add_argument(
        "--splits", nargs="+", default=["train", "val", "test"], help="the splits to write"
    )
    parser.add_argument("--chunk_bytes", default="64MB", help="the chunks' size limit")
    args, overrides = parser.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    datamodule, data_config = datamodule_from_configs(args.config, overrides)
    manifest = write_shards(
        datamodule,
        args.output,
        args.workers,
        args.splits,
        source={"configs": list(args.config), "overrides": overrides, "data": data_config},
        chunk_bytes=args.chunk_bytes,
    )
    counts = ", ".join(f"{s} {e['count']}" for s, e in manifest["splits"].items())
    log.info("zoo optimize: wrote %s (%s samples)", args.output, counts)
    return manifest
