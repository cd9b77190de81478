"""Streaming shards against the file-folder loader, and ``zoo optimize``'s conversion rate.

    python bench/streaming.py                               # 1024 JPEGs of 256 px, 2 workers
    python bench/streaming.py --samples 4096 --workers 8 --json streaming.json

One run, the same data and workers for both loaders: a SkyScript-shaped table (``train.csv``
with caption, lat, lon, label and a folder of JPEG files; SkyScript's images are JPEGs of a few
hundred pixels) read at 224 px by :class:`~zoo.data.datamodules.ImageTextLocationDataModule`:

* **conversion**: :func:`zoo.optimize.write_shards` (``zoo optimize``) of the training split,
  samples/s and stored bytes per sample;
* **file loader**: the datamodule's training loader over the files (the zoo's resumable
  sampler, ``--workers`` processes, the tokenizing collate), samples/s over ``--epochs`` epochs
  after a warm-up epoch (the page cache holds the files then, as it holds the chunks);
* **streaming loader**: the same datamodule with ``streaming:`` the shards (LitData's
  ``StreamingDataLoader``, the same workers, collate and batch size), timed alike.

Then the worked estimate for SkyScript's 5.2 M pairs: shards and bytes, hours to convert at the
measured rate per worker, and the loader's headroom against the GPU's demand: FLAVARS'
skyscript config takes 47.9 TFLOP a step of 128 (``bench/memory_plan.py``'s meta-device
setup under ``FlopCounterMode``, forward and backward), so a GPU at ``--mfu`` of
``--gpu-tflops`` eats ``rate = mfu * tflops / flops_per_sample`` samples/s, which its
``--cpus-per-gpu`` loader workers must feed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: SkyScript's image-text pairs (the paper's 5.2 M).
SKYSCRIPT_PAIRS = 5_200_000
#: FLAVARS' skyscript config, forward + backward of one step of 128 (see the docstring).
FLAVARS_FLOPS_PER_SAMPLE = 47.945e12 / 128


def write_table(root: Path, samples: int, size: int, seed: int = 0) -> Path:
    """A SkyScript-shaped training table of ``samples`` JPEG images (smooth random fields, so
    they compress like photographs rather than noise), with captions, locations and labels.

    Args:
        root: the folder to write.
        samples: training images.
        size: their side in pixels.
        seed: the generator's seed.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    labels = ["forest", "water", "field", "road"]
    for i in range(samples):
        coarse = rng.uniform(0, 255, (size // 16, size // 16, 3)).astype(np.uint8)
        image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
        path = f"images/{i:07d}.jpg"
        image.save(root / path, quality=90)
        label = labels[i % len(labels)]
        rows.append(
            {
                "filepath": path,
                "title": f"a satellite image of a {label} near sample {i % 97}.",
                "label": label,
                "lat": float(rng.uniform(-60, 60)),
                "lon": float(rng.uniform(-180, 180)),
            }
        )
    for split in ("train", "val", "test"):
        table = pd.DataFrame(rows if split == "train" else rows[:8])
        table.to_csv(root / f"{split}.csv", index=False)
    return root


def time_loader(loader: Any, epochs: int) -> dict[str, float]:
    """Samples/s of ``loader`` over ``epochs`` epochs after a warm-up epoch.

    Args:
        loader: the training loader.
        epochs: timed epochs.

    Returns:
        ``{"samples_per_s", "seconds", "samples"}``.
    """
    for _ in loader:  # warm-up: workers started, files or chunks in the page cache
        pass
    count, start = 0, time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            count += len(batch["caption"])
    seconds = time.perf_counter() - start
    return {"samples_per_s": count / seconds, "seconds": seconds, "samples": count}


def run(
    samples: int = 1024,
    size: int = 224,
    workers: int = 2,
    batch_size: int = 64,
    epochs: int = 3,
    workdir: Path | None = None,
    cpus_per_gpu: int = 12,
    gpu_tflops: float = 989.0,
    mfu: float = 0.4,
) -> dict[str, Any]:
    """The benchmark: conversion, file loader, streaming loader, and the SkyScript estimate.

    Args:
        samples: training images.
        size: their side in pixels (read at 224).
        workers: conversion and loader worker processes.
        batch_size: the loaders' batch size.
        epochs: timed epochs per loader.
        workdir: where the data and shards go (None: a temporary folder, removed after).
        cpus_per_gpu: loader workers a GPU gets in the estimate (the SLURM example's 12).
        gpu_tflops: the GPU's dense bf16 TFLOP/s (an H100 SXM's 989).
        mfu: the fraction of it a FLAVARS step reaches (an assumption; not measured here).

    Returns:
        The figures.
    """
    from zoo.data.datamodules import ImageTextLocationDataModule
    from zoo.optimize import write_shards

    temporary = workdir is None
    work = Path(tempfile.mkdtemp(prefix="zoo-bench-streaming-")) if workdir is None else workdir
    try:
        root = write_table(work / "table", samples, size)
        common = dict(image_size=224, batch_size=batch_size, num_workers=workers)
        files = ImageTextLocationDataModule(str(root), **common)
        start = time.perf_counter()
        manifest = write_shards(files, str(work / "shards"), workers=workers)
        convert_s = time.perf_counter() - start
        written = sum(e["count"] for e in manifest["splits"].values())  # val and test: 8 each
        stored = manifest["splits"]["train"]["bytes"]
        source = sum(p.stat().st_size for p in (root / "images").iterdir())
        streamed = ImageTextLocationDataModule(str(root), streaming=str(work / "shards"), **common)
        torch.manual_seed(0)
        for dm in (files, streamed):
            dm.setup("fit")
        file_rate = time_loader(files.train_dataloader(), epochs)
        stream_rate = time_loader(streamed.train_dataloader(), epochs)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    convert_rate = written / convert_s
    per_sample = stored / samples
    gpu_rate = mfu * gpu_tflops * 1e12 / FLAVARS_FLOPS_PER_SAMPLE
    per_worker = stream_rate["samples_per_s"] / workers
    estimate = {
        "pairs": SKYSCRIPT_PAIRS,
        "bytes_per_sample_measured": per_sample,
        "total_gb": SKYSCRIPT_PAIRS * per_sample / 1e9,
        "chunks_of_64mb": math.ceil(SKYSCRIPT_PAIRS * per_sample / 64e6),
        "convert_hours_per_worker_count": {
            str(n): SKYSCRIPT_PAIRS / (convert_rate / workers * n) / 3600 for n in (1, 16, 64)
        },
        "gpu_samples_per_s": gpu_rate,
        "loader_samples_per_s_per_gpu": per_worker * cpus_per_gpu,
        "headroom": per_worker * cpus_per_gpu / gpu_rate,
        "assumptions": {"cpus_per_gpu": cpus_per_gpu, "gpu_tflops": gpu_tflops, "mfu": mfu},
    }
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "samples": samples,
        "image_px": size,
        "workers": workers,
        "batch_size": batch_size,
        "epochs": epochs,
        "source_bytes": source,
        "stored_bytes": stored,
        "convert": {"seconds": convert_s, "samples_per_s": convert_rate},
        "file_loader": file_rate,
        "streaming_loader": stream_rate,
        "streaming_over_file": stream_rate["samples_per_s"] / file_rate["samples_per_s"],
        "skyscript_estimate": estimate,
    }


def format_result(result: dict[str, Any]) -> str:
    """The figures as a Markdown table and the estimate's lines.

    Args:
        result: :func:`run`'s figures.

    Returns:
        The text.
    """
    e = result["skyscript_estimate"]
    lines = [
        f"{result['date']}: {result['samples']} JPEGs of {result['image_px']} px read at 224, "
        f"{result['workers']} workers, batches of {result['batch_size']}, "
        f"{result['epochs']} timed epochs",
        "",
        "| what | samples/s | seconds |",
        "| --- | --- | --- |",
        f"| zoo optimize (conversion) | {result['convert']['samples_per_s']:.0f} | "
        f"{result['convert']['seconds']:.1f} |",
        f"| file-folder loader | {result['file_loader']['samples_per_s']:.0f} | "
        f"{result['file_loader']['seconds']:.1f} |",
        f"| streaming loader | {result['streaming_loader']['samples_per_s']:.0f} | "
        f"{result['streaming_loader']['seconds']:.1f} |",
        "",
        f"streaming / file: {result['streaming_over_file']:.2f}; stored "
        f"{result['stored_bytes'] / result['samples'] / 1e3:.1f} kB a sample "
        f"(source files {result['source_bytes'] / result['samples'] / 1e3:.1f} kB)",
        f"SkyScript 5.2 M: {e['total_gb']:.0f} GB in {e['chunks_of_64mb']} chunks of 64 MB; "
        "conversion "
        + ", ".join(
            f"{h:.1f} h on {n} workers" for n, h in e["convert_hours_per_worker_count"].items()
        )
        + f"; GPU demand {e['gpu_samples_per_s']:.0f} samples/s, loader "
        f"{e['loader_samples_per_s_per_gpu']:.0f} samples/s on {e['assumptions']['cpus_per_gpu']} "
        f"workers: headroom {e['headroom']:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print (and optionally write) its figures.

    Args:
        argv: the command line (None: ``sys.argv``).

    Returns:
        The figures.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    result = run(args.samples, args.size, args.workers, args.batch_size, args.epochs, args.workdir)
    print(format_result(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
