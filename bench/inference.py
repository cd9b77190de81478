"""Inference speed of the zoo side by side with plain timm and Hugging Face loops (issue 23).

    python bench/inference.py                      [--output inference.json] [--parts images generate]
    python bench/inference.py --scale test --rounds 1 --warmup 0        # the tests' smoke run

Two parts, each side timed in one run, interleaved round by round (the order alternating, after
warm-up rounds, :func:`timing.interleaved`); medians, their spread and the zoo / reference ratio
(above 1: the zoo is faster) are reported.

* ``images``: FLAVARS' image embedding over a folder of JPEG files, the zoo's path (``zoo.load``
  style: ``model.transform`` on each PIL image, a stacked batch, ``model.encode_image``) against
  a plain timm / open_clip-style loop of the same tower (the same timm module and weights,
  timm's own ``resolve_data_config`` + ``create_transform``, ``forward_features`` +
  ``forward_head(pre_logits=True)``, FLAVARS' image projection, L2-normalized). Both sides open
  and decode the same files (``PIL.Image.open(...).convert("RGB")``) inside the timed loop, at
  the same batch size. Models: FLAVARS from its default config (``zoo.create_model("flavars")``)
  and the same config with a ViT-B/16 tower at 224 px (random weights). Before timing, the two
  forward paths are checked to give the same embeddings on the same tensor.
* ``generate``: the generators' decoding path against ``LlavaForConditionalGeneration.generate``
  at matched dimensions (the random LLaVA of ``side_by_side_models``; the zoo's LLaVA-anatomy
  FUSE, FUSE, GeoPix load its weights, Aquila its Llama), greedy, KV cache on both sides, the
  same text prompt (one ``<image>`` on the zoo's side, one per visual token on the reference's),
  ``min_new_tokens = max_new_tokens`` so both generate exactly N tokens; tokens/s = B·N / the
  time of one whole call (prefill included), at batch 1 and 8.

``--threads`` defaults to 1 (stable under a shared CPU); the ratio is what to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "bench"):  # the zoo of this checkout; the pairs beside this file
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# The measuring library beside this file (it imports neither this command nor the pairs).
from timing import Pair, Side, interleaved  # noqa: E402

PARTS = ("images", "generate")
GENERATORS = ("llava", "fuse", "aquila", "geopix")

#: Per scale: the FLAVARS image specs (config overrides, folder and batch sizes) and the
#: generator dimensions (over ``side_by_side_models``' ``llava`` dimensions of ``base``).
SCALES: dict[str, dict[str, Any]] = {
    "test": {
        "images": {
            "flavars default": {"overrides": None, "files": 8, "file_size": 96, "batch": 4},
        },
        "generate": {
            "base": "test",
            "sizes": {"tiny": {}},
            "batches": [1, 2],
            "prompt_tokens": 8,
            "new_tokens": 4,
        },
    },
    "cpu": {
        "images": {
            "flavars default": {"overrides": [], "files": 256, "file_size": 256, "batch": 32},
            "flavars ViT-B/16 224 px": {
                "overrides": [
                    "--model.init_args.vision.name=vit_base_patch16_224",
                    "--data.init_args.image_size=224",
                ],
                "files": 16,
                "file_size": 256,
                "batch": 8,
            },
        },
        "generate": {
            "base": "cpu",
            # side_by_side's CPU LLaVA (ViT 128x4 at 64 px, Llama 128x4), and a mid size
            # (ViT 384x6 at 160 px / 16: 100 visual tokens, Llama 512x8) so the figure is
            # not only Python overhead.
            "sizes": {
                "tiny": {},
                "mid": {
                    "image": 160,
                    "patch": 16,
                    "vit_width": 384,
                    "vit_depth": 6,
                    "vit_heads": 6,
                    "vit_mlp": 1536,
                    "llm_width": 512,
                    "llm_mlp": 1376,
                    "llm_depth": 8,
                    "llm_heads": 8,
                    "llm_kv_heads": 4,
                    "detail_layers": [1, 3, 5],
                    "windows": [160, 64],  # 4 and 2 token cells: whole cells
                    "canvas": 160,
                    "inject": [2, 5],
                    "geopix_layers": [2, 5],
                    "aquila_image": 160,
                    "aquila_grid": 10,
                    "aquila_mda": [2, 5],
                },
            },
            "batches": [1, 8],
            "prompt_tokens": 32,
            "new_tokens": 32,
        },
    },
}


@dataclass
class Rate:
    """One row: both sides' median times, rates and the ratio.

    Args:
        part: ``images`` or ``generate``.
        name: the row's model (and size).
        zoo: the zoo side's name.
        reference: the reference side's name.
        batch_size: samples per batch (both sides).
        units: what is counted per call (images, or B·N new tokens).
        unit: ``images`` or ``tokens``.
        zoo_per_s: the zoo's units per second at its median time.
        reference_per_s: the reference's units per second at its median time.
        zoo_over_reference: ``zoo_per_s / reference_per_s`` (the issue's goal: at least 0.95).
        zoo_spread: the zoo's (max - min) / median of its timed calls.
        reference_spread: the reference's (max - min) / median.
        ratio_median: the median of the per-round ratios (reference time / zoo time of the
            same round: both under the same load).
        ratio_range: the lowest and highest per-round ratio.
        note: what differs between the sides, the checks made ("" when nothing).
        zoo_times_ms: the zoo's timed calls (ms).
        reference_times_ms: the reference's timed calls (ms).
        zoo_prefill_ms: generate: the zoo's median one-token call (ms).
        reference_prefill_ms: generate: the reference's median one-token call (ms).
        zoo_decode_per_s: generate: the zoo's tokens/s after the first token.
        reference_decode_per_s: generate: the reference's tokens/s after the first token.
        decode_zoo_over_reference: generate: the ratio of the two decode rates.
    """

    part: str
    name: str
    zoo: str
    reference: str
    batch_size: int
    units: int
    unit: str
    zoo_per_s: float
    reference_per_s: float
    zoo_over_reference: float
    zoo_spread: float
    reference_spread: float
    ratio_median: float
    ratio_range: tuple[float, float]
    note: str = ""
    zoo_times_ms: list[float] = field(default_factory=list)
    reference_times_ms: list[float] = field(default_factory=list)
    zoo_prefill_ms: float | None = None
    reference_prefill_ms: float | None = None
    zoo_decode_per_s: float | None = None
    reference_decode_per_s: float | None = None
    decode_zoo_over_reference: float | None = None


def rate(
    part: str, name: str, pair: Pair, units: int, unit: str, warmup: int, rounds: int, note: str
) -> Rate:
    """Times both sides of ``pair`` interleaved and reduces the times to one row.

    Args:
        part: ``images`` or ``generate``.
        name: the row's model.
        pair: the two sides (``Side.step`` is one call: the folder, or one ``generate``).
        units: what one call produces (images, or B·N tokens).
        unit: its name.
        warmup: untimed rounds first.
        rounds: timed rounds.
        note: what the row's table shows in its last column.

    Returns:
        The row.
    """
    zoo, ref = interleaved(pair, warmup, rounds, torch.device("cpu"))
    zoo_ms, ref_ms = statistics.median(zoo), statistics.median(ref)
    ratios = [r / z for z, r in zip(zoo, ref, strict=True)]
    return Rate(
        part,
        name,
        pair.zoo.name,
        pair.hf.name,
        pair.batch_size,
        units,
        unit,
        round(units / zoo_ms * 1000, 2),
        round(units / ref_ms * 1000, 2),
        round(ref_ms / zoo_ms, 3),
        round((max(zoo) - min(zoo)) / zoo_ms, 3),
        round((max(ref) - min(ref)) / ref_ms, 3),
        round(statistics.median(ratios), 3),
        (round(min(ratios), 3), round(max(ratios), 3)),
        note,
        [round(t, 1) for t in zoo],
        [round(t, 1) for t in ref],
    )


# ------------------------------------------------------------------------------ images
def unit_embedding(output: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """FLAVARS' unit image embedding from ``encode_image``'s output, whichever it returns.

    Args:
        output: ``(pooled, embedding)`` (zoo 0.2's ``encode_image``) or the embedding alone.

    Returns:
        The ``B×E`` unit embedding.
    """
    return output[1] if isinstance(output, tuple) else output


def image_folder(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` RGB JPEG files of ``size`` pixels (smooth random content, quality 90).

    Args:
        folder: where to write them.
        count: how many.
        size: their side in pixels.

    Returns:
        Their paths, sorted.
    """
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        coarse = torch.rand(1, 3, 8, 8, generator=g) * 255
        image = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        image = (image + torch.randn(image.shape, generator=g) * 12).clamp(0, 255)
        array = image[0].permute(1, 2, 0).to(torch.uint8).numpy()
        Image.fromarray(array).save(folder / f"{i:04d}.jpg", quality=90)
    return sorted(folder.glob("*.jpg"))


def _batches(paths: Sequence[Path], batch: int) -> list[Sequence[Path]]:
    return [paths[i : i + batch] for i in range(0, len(paths), batch)]


def _read(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def embed_folder_zoo(model: nn.Module, transform: Callable, paths: Sequence[Path], batch: int):
    """The zoo's path over a folder: ``model.transform`` per PIL image, ``encode_image``.

    Args:
        model: FLAVARS in eval mode.
        transform: its ``transform`` (what ``zoo.load`` returns).
        paths: the image files.
        batch: images per batch.

    Returns:
        The ``N×E`` unit embeddings.
    """
    out = []
    with torch.inference_mode():
        for chunk in _batches(paths, batch):
            pixels = torch.stack([transform(_read(p)) for p in chunk])
            out.append(unit_embedding(model.encode_image(pixels)))
    return torch.cat(out)


def embed_folder_timm(
    tower: nn.Module, projection: nn.Module, transform: Callable, paths: Sequence[Path], batch: int
):
    """An open_clip-style loop: timm's transform per PIL image, the tower, the projection.

    Args:
        tower: the timm model.
        projection: the image projection to the shared space.
        transform: timm's ``create_transform`` for the tower.
        paths: the image files.
        batch: images per batch.

    Returns:
        The ``N×E`` unit embeddings.
    """
    out = []
    with torch.inference_mode():
        for chunk in _batches(paths, batch):
            pixels = torch.stack([transform(_read(p)) for p in chunk])
            features = tower.forward_head(tower.forward_features(pixels), pre_logits=True)
            out.append(F.normalize(projection(features), dim=-1))
    return torch.cat(out)


def flavars_model(overrides: list[str] | None) -> nn.Module:
    """FLAVARS from the default config (``zoo.create_model("flavars")``), with data overrides
    (the image size is the data's, linked to the model) through the same builder.

    Args:
        overrides: ``--key=value`` arguments over ``configs/flavars.yaml``; None: the
            constructor's defaults (the same small model, without the command line's start-up:
            the tests' scale).

    Returns:
        The model in eval mode.
    """
    import zoo
    from zoo.api import config_root
    from zoo.main import build_from_configs

    if overrides is None:
        from side_by_side_models import text_tokenizer

        from zoo.models.flavars import FLAVARS

        return FLAVARS(tokenizer=text_tokenizer()).eval()
    if not overrides:
        model = zoo.create_model("flavars")
    else:
        model = build_from_configs([config_root() / "flavars.yaml"], overrides=overrides).model
    return model.eval()


def folder_pair(
    name: str, model: nn.Module, timm_transform: Callable, paths: Sequence[Path], batch: int
) -> Pair:
    """The zoo's and timm's embedding of the folder as two sides (one call: every file).

    Args:
        name: the row's model.
        model: FLAVARS in eval mode.
        timm_transform: timm's transform for its tower.
        paths: the image files.
        batch: images per batch (both sides).

    Returns:
        The pair.
    """
    transform = model.transform  # what zoo.load returns beside the model
    tower = model.encoders.vision_encoder.model
    projection = model.encoders.image_projection
    return Pair(
        name,
        Side("FLAVARS.encode_image", lambda: embed_folder_zoo(model, transform, paths, batch), 0),
        Side(
            "timm loop",
            lambda: embed_folder_timm(tower, projection, timm_transform, paths, batch),
            0,
        ),
        batch,
        0,
    )


def images_part(
    scale: dict[str, Any], folder: Path, warmup: int, rounds: int, emit: Callable[[Rate], None]
) -> None:
    """FLAVARS' ``encode_image`` over a folder vs the timm loop, per image spec of the scale.

    Args:
        scale: the scale's ``images`` specs.
        folder: a scratch folder for the images.
        warmup: untimed rounds.
        rounds: timed rounds.
        emit: takes each row as it is measured.

    Raises:
        AssertionError: the two paths' embeddings differ on the same tensor.
    """
    from timm.data import create_transform, resolve_data_config

    for name, spec in scale.items():
        torch.manual_seed(0)
        model = flavars_model(spec["overrides"])
        transform = model.transform  # what zoo.load returns beside the model
        tower = model.encoders.vision_encoder.model
        projection = model.encoders.image_projection
        config = resolve_data_config({}, model=tower)
        timm_transform = create_transform(**config)
        # The same tower: both forward paths agree on the same normalized tensor.
        probe = torch.randn(
            2, 3, transform.preprocessing.image_size, transform.preprocessing.image_size
        )
        with torch.inference_mode():
            ours = unit_embedding(model.encode_image(probe))
            theirs = F.normalize(
                projection(tower.forward_head(tower.forward_features(probe), pre_logits=True)),
                dim=-1,
            )
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
        paths = image_folder(
            folder / name.replace(" ", "_").replace("/", "-"), spec["files"], spec["file_size"]
        )
        pair = folder_pair(name, model, timm_transform, paths, spec["batch"])
        zoo_size = transform.preprocessing.image_size
        note = (
            f"{len(paths)} JPEGs of {spec['file_size']} px read + decoded by both; zoo: resize to "
            f"{zoo_size} (bilinear, antialiased, float); timm: {config['interpolation']} resize "
            f"+ crop {config['input_size'][-1]} at crop_pct {config['crop_pct']}"
        )
        emit(rate("images", name, pair, len(paths), "images", warmup, rounds, note))
        del model, pair


# ---------------------------------------------------------------------------- generate
def zoo_decode(
    model: nn.Module, image: Tensor, prompt_ids: Tensor, attention_mask: Tensor
) -> Tensor:
    """The zoo's decoding path: the answers' new token ids.

    ``VisionLanguageGenerator.answer(images, questions, max_new_tokens)`` tokenizes the
    questions and calls this same ``generate_ids``. When it lands, time it by replacing the
    line below with ``model.answer(images, questions, max_new_tokens)`` (and build PIL images
    and question strings in :func:`generator_pair`; the reference then needs the same
    tokenizing and image processing to stay matched).

    Args:
        model: the generator in eval mode.
        image: normalized images ``B×C×H×W``.
        prompt_ids: left-padded prompts ``B×T`` with one ``<image>`` each.
        attention_mask: ``B×T``.

    Returns:
        ``B×N`` new token ids.
    """
    return model.generate_ids(image, prompt_ids, attention_mask)


def generator_pair(
    family: str, d: dict[str, Any], batch: int, prompt_tokens: int, new_tokens: int, folder: Path
) -> tuple[Pair, Pair, str]:
    """The zoo's generator and the random LLaVA, their prompts, as two decoding sides.

    Args:
        family: one of :data:`GENERATORS`.
        d: the LLaVA dimensions.
        batch: prompts per call.
        prompt_tokens: text tokens of each prompt (the zoo's ``<image>`` among them).
        new_tokens: tokens each side generates (exactly: ``min_new_tokens`` too).
        folder: where the random LLaVA is saved.

    Returns:
        The pair, the same calls for one new token (the prefill: the visual tokens, the prompt
        and the first token) and the note (sequence lengths, whether the tokens are equal,
        what differs).
    """
    from side_by_side_models import _words, generator_model, llava_folder
    from transformers import LlavaForConditionalGeneration

    model, label, unmatched, image_size = generator_model(family, d, folder)
    if family == "geopix":  # the training pair's note is about its mask losses
        unmatched = (
            f"GeoPix's visual tokens come from ViT block {d['geopix_layers'][-1]} (0-based; "
            "LLaVA's: the block before the last); its mask decoder does not run in decoding"
        )
    path, _ = llava_folder(d, folder)
    reference = LlavaForConditionalGeneration.from_pretrained(path, attn_implementation="sdpa")
    model.eval(), reference.eval()
    tokenizer = model.tokenizer
    g = torch.Generator().manual_seed(0)
    ids = _words(tokenizer, (batch, prompt_tokens), g)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    ids[:, 1] = image_id
    size = image_size or d["image"]
    pixels = torch.randn(batch, 3, size, size, generator=g)
    visual = (d["image"] // d["patch"]) ** 2  # the LLaVA's: CLS dropped
    ref_ids = torch.cat([ids[:, :1], torch.full((batch, visual), image_id), ids[:, 2:]], dim=1)
    ref_pixels = (
        pixels if image_size is None else torch.randn(batch, 3, d["image"], d["image"], generator=g)
    )
    mask, ref_mask = torch.ones_like(ids), torch.ones_like(ref_ids)
    stop = list(model.stop_token_ids)
    pad = tokenizer.pad_token_id

    def zoo_step(n: int = new_tokens) -> Tensor:
        # Exactly n tokens: the zoo's generate_ids passes its GenerationConfig, and Hugging
        # Face's generate takes the rest (min_new_tokens) from the LLM's generation_config.
        model.generation.max_new_tokens = n
        model.llm.generation_config.min_new_tokens = n
        with torch.inference_mode():
            return zoo_decode(model, pixels, ids, mask)

    def ref_step(n: int = new_tokens) -> Tensor:
        with torch.inference_mode():
            out = reference.generate(
                input_ids=ref_ids,
                attention_mask=ref_mask,
                pixel_values=ref_pixels,
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                num_beams=1,
                use_cache=True,
                eos_token_id=stop,
                pad_token_id=pad,
            )
        return out[:, ref_ids.shape[1] :]

    zoo_out, ref_out = zoo_step(), ref_step()
    if zoo_out.shape != (batch, new_tokens) or ref_out.shape != (batch, new_tokens):
        raise AssertionError(
            f"{family}: expected {batch}x{new_tokens} new tokens, got zoo {tuple(zoo_out.shape)}"
            f" and reference {tuple(ref_out.shape)}"
        )
    with torch.inference_mode():
        zoo_visual = model.visual_tokens(pixels[:1])[0].shape[1]
    same = bool(torch.equal(zoo_out, ref_out))
    note = (
        f"prompt {prompt_tokens - 1 + zoo_visual} / {ref_ids.shape[1]} tokens "
        f"({zoo_visual} / {visual} visual); same tokens: {'yes' if same else 'no'}"
    )
    if unmatched:
        note += f"; {unmatched}"
    pair = Pair(
        family,
        Side(f"{label} generate_ids", zoo_step, 0),
        Side("LlavaForConditionalGeneration.generate", ref_step, 0),
        batch,
        new_tokens,
    )
    prefill = Pair(
        family,
        Side(f"{label} generate_ids", lambda: zoo_step(1), 0),
        Side("LlavaForConditionalGeneration.generate", lambda: ref_step(1), 0),
        batch,
        1,
    )
    return pair, prefill, note


def generate_part(
    scale: dict[str, Any],
    families: Sequence[str],
    folder: Path,
    warmup: int,
    rounds: int,
    emit: Callable[[Rate], None],
) -> None:
    """The generators' decoding vs the LLaVA's ``generate``, per size, family and batch.

    Args:
        scale: the scale's ``generate`` settings.
        families: the generators to time.
        folder: a scratch folder for the random LLaVA checkpoints.
        warmup: untimed rounds.
        rounds: timed rounds.
        emit: takes each row (one per size, family and batch size) as it is measured.
    """
    from side_by_side_models import scale_dims

    base = scale_dims(scale["base"])["llava"]
    n = scale["new_tokens"]
    for size, over in scale["sizes"].items():
        d = base | over
        for family in families:
            for batch in scale["batches"]:
                torch.manual_seed(0)
                pair, prefill, note = generator_pair(
                    family, d | {"batch": batch}, batch, scale["prompt_tokens"], n, folder / size
                )
                name = f"{family} {size}"
                r = rate("generate", name, pair, batch * n, "tokens", warmup, rounds, note)
                first = rate("generate", name, prefill, batch, "tokens", warmup, rounds, "")
                add_decode(r, first, batch * (n - 1))
                emit(r)
                del pair, prefill


def add_decode(row: Rate, prefill: Rate, tokens: int) -> None:
    """Fill ``row``'s prefill and decode fields from the one-token calls' row.

    Decode rate: the tokens after the first over the time beyond the one-token call's (both
    medians), so a family's extra visual work (windows, a mask decoder) stays out of it.

    Args:
        row: the N-token row, updated in place.
        prefill: the one-token row.
        tokens: ``B·(N - 1)``.
    """
    zoo_n, ref_n = statistics.median(row.zoo_times_ms), statistics.median(row.reference_times_ms)
    zoo_1 = statistics.median(prefill.zoo_times_ms)
    ref_1 = statistics.median(prefill.reference_times_ms)
    row.zoo_prefill_ms, row.reference_prefill_ms = round(zoo_1, 1), round(ref_1, 1)
    row.zoo_decode_per_s = round(tokens / max(zoo_n - zoo_1, 1e-6) * 1000, 2)
    row.reference_decode_per_s = round(tokens / max(ref_n - ref_1, 1e-6) * 1000, 2)
    row.decode_zoo_over_reference = round(row.zoo_decode_per_s / row.reference_decode_per_s, 3)


# ------------------------------------------------------------------------------- table
def table(rows: list[Rate]) -> str:
    """The rows of one part as a Markdown table (generate: with the one-token call's time and
    the decode rates).

    Args:
        rows: rows of one part (``images`` or ``generate``).

    Returns:
        The table's lines.
    """
    generate = bool(rows) and rows[0].unit == "tokens"
    unit = "tok/s" if generate else "img/s"
    head = [
        "model",
        "zoo",
        "reference",
        "batch",
        f"zoo {unit}",
        f"reference {unit}",
        "zoo / reference",
        "per-round ratio, median (range)",
        "spread zoo / reference",
    ]
    if generate:
        head += ["1-token call ms zoo / reference", "decode tok/s zoo / reference (ratio)"]
    head.append("notes")
    align = ["---", "---", "---", "---:", "---:", "---:", "---:", "---", "---"]
    align += ["---", "---"] if generate else []
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join([*align, "---"]) + " |"]
    for r in rows:
        row = [
            r.name,
            r.zoo,
            r.reference,
            str(r.batch_size),
            f"{r.zoo_per_s:.3g}",
            f"{r.reference_per_s:.3g}",
            f"{r.zoo_over_reference:.3f}",
            f"{r.ratio_median:.3f} ({r.ratio_range[0]:.2f}-{r.ratio_range[1]:.2f})",
            f"{100 * r.zoo_spread:.0f} % / {100 * r.reference_spread:.0f} %",
        ]
        if generate:
            row += [
                f"{r.zoo_prefill_ms:.0f} / {r.reference_prefill_ms:.0f}",
                f"{r.zoo_decode_per_s:.3g} / {r.reference_decode_per_s:.3g} "
                f"({r.decode_zoo_over_reference:.3f})",
            ]
        row.append(r.note or "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Rate]:
    """Builds and times the chosen parts, prints their tables and writes the JSON.

    Args:
        argv: the command line (None: ``sys.argv``).

    Returns:
        All rows.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), default="cpu")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--families", nargs="+", choices=GENERATORS, default=list(GENERATORS))
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (medians)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    scale = SCALES[args.scale]
    rows: list[Rate] = []
    started = time.perf_counter()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": "CPU",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "scale": args.scale,
        "warmup": args.warmup,
        "rounds": args.rounds,
    }

    def save() -> None:
        if args.output:
            results = [asdict(r) for r in rows]
            Path(args.output).write_text(
                json.dumps({"meta": meta, "results": results}, indent=2) + "\n"
            )

    def emit(row: Rate) -> None:
        rows.append(row)
        unit = "img/s" if row.unit == "images" else "tok/s"
        print(
            f"{row.part} {row.name} B {row.batch_size}: zoo {row.zoo_per_s:.1f} {unit}, "
            f"reference {row.reference_per_s:.1f} {unit} ({row.zoo_over_reference:.3f}x)",
            flush=True,
        )
        save()  # row by row: a long run keeps what it measured

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "images" in args.parts:
            images_part(scale["images"], Path(tmp) / "images", args.warmup, args.rounds, emit)
        if "generate" in args.parts:
            generate_part(
                scale["generate"],
                args.families,
                Path(tmp) / "llava",
                args.warmup,
                args.rounds,
                emit,
            )
    wall = time.perf_counter() - started
    print(
        f"\ntorch {torch.__version__}, CPU, {torch.get_num_threads()} threads, {args.rounds} "
        f"timed rounds after {args.warmup} warm-up, medians; {wall:.0f} s in all\n"
    )
    for part in PARTS:
        part_rows = [r for r in rows if r.part == part]
        if part_rows:
            print(table(part_rows) + "\n")
    meta["wall_s"] = round(wall, 1)
    save()
    return rows


if __name__ == "__main__":
    main()
