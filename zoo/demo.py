"""``zoo demo``: a local Gradio page to try a trained model (the optional extra ``demo``).

    zoo demo --config configs/geopix.yaml --ckpt_path runs/geopix/.../last.ckpt
    zoo demo --config configs/flavars.yaml --ckpt_path runs/flavars/.../last.ckpt --images my_pngs/

Upload an image (or pick one of ``--images``) and ask: a generator (Aquila, FUSE) answers;
GeoPix answers with its masks overlaid and labelled with their phrases; FLAVARS gives the
zero-shot class scores and ranks the ``--images`` folder by a text query. The page serves on
``--host``/``--port`` (default 127.0.0.1:7860). Its functions are also Gradio API endpoints
(``/answer``, ``/classify``, ``/rank``), which ``gradio_client`` calls. The rest of the
arguments are config overrides, as for ``zoo embed``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning import LightningDataModule, LightningModule
from torch.nn import functional as F

from zoo.data.rasters import RASTER_EXTENSIONS, read_raster
from zoo.main import build_from_configs, run_parser
from zoo.models.capabilities import Generation, Masks, TextEmbeddings

__all__ = ["Demo", "build_app", "main"]


class Demo:
    """A model and its training datamodule (size, normalization) behind the page.

    Args:
        model: a zoo model (FLAVARS, Aquila, FUSE or GeoPix).
        datamodule: the datamodule it was trained with (FLAVARS' normalization).
        images: a folder of images to pick from and, for FLAVARS, to rank.
    """

    def __init__(
        self, model: LightningModule, datamodule: LightningDataModule, images: Path | None = None
    ) -> None:
        self.model = model.eval()
        self.datamodule = datamodule
        self.size = datamodule.image_size
        self.images = sorted(
            p
            for p in (images.rglob("*") if images else [])
            if p.suffix.lower() in RASTER_EXTENSIONS
        )

    @property
    def kind(self) -> str:
        """``masks`` (GeoPix), ``generation`` (Aquila, FUSE) or ``embedding`` (FLAVARS)."""
        if isinstance(self.model, Masks):
            return "masks"
        return "generation" if isinstance(self.model, Generation) else "embedding"

    def _pixels(self, image: np.ndarray) -> torch.Tensor:
        """An ``H×W×3`` uint8 array as a resized float ``3×S×S`` image in [0, 255]."""
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, -1)
        pixels = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float()
        return F.interpolate(
            pixels[None], size=(self.size, self.size), mode="bilinear", antialias=True
        )[0]

    @torch.no_grad()
    def answer(
        self, image: np.ndarray, question: str
    ) -> tuple[str, tuple[np.ndarray, list[tuple[np.ndarray, str]]]]:
        """The generated answer, and the image with GeoPix's masks (phrase labels).

        The model's own inference surface: ``answer`` (Aquila, FUSE) or ``segment`` (GeoPix),
        on the image resized to the model's input size (the masks come back at that size).

        Args:
            image: the page's ``H×W×3`` (or ``H×W``) uint8 image.
            question: the question.

        Returns:
            The answer, and the resized image with each mask and its label (``phrase
            (category)``; none for Aquila and FUSE).

        Raises:
            ValueError: no image, or a model that does not generate.
        """
        if image is None:
            raise ValueError("upload or pick an image first")
        if self.kind == "embedding":
            raise ValueError(
                f"{type(self.model).__name__} does not generate answers: use the class scores"
            )
        pixels = self._pixels(image)
        shown = pixels.permute(1, 2, 0).byte().numpy()
        if self.kind != "masks":
            return self.model.answer([pixels], question)[0], (shown, [])
        result = self.model.segment(pixels, question)
        labels = [
            f"{p} ({c})" if c else p for p, c in zip(result.phrases, result.categories, strict=True)
        ]
        return result.answer, (
            shown,
            [
                (m.astype(np.float32), lab)
                for m, lab in zip(result.masks.numpy(), labels, strict=True)
            ],
        )

    @torch.no_grad()
    def embed_images(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Unit image embeddings ``B×E`` of ``3×S×S`` images in [0, 255]."""
        batch = {"image": torch.stack(images).to(self.model.device)}
        batch = self.datamodule.on_after_batch_transfer(batch, 0)
        return self.model.encode_image(batch["image"])

    def _require_embeddings(self) -> None:
        if not isinstance(self.model, TextEmbeddings):
            raise ValueError(f"{type(self.model).__name__} has no text encoder: ask it instead")

    @torch.no_grad()
    def classify(self, image: np.ndarray) -> dict[str, float]:
        """Zero-shot class probabilities (softmax of the model's scaled similarities)."""
        self._require_embeddings()
        if image is None:
            raise ValueError("upload or pick an image first")
        batch = {"image": self._pixels(image)[None].to(self.model.device)}
        pixels = self.datamodule.on_after_batch_transfer(batch, 0)["image"]
        probs = self.model.zero_shot(pixels)[0].tolist()  # the model's own zero-shot scores
        return dict(zip(self.model.class_names, probs, strict=True))

    @torch.no_grad()
    def rank(self, query: str, top: int = 8) -> list[tuple[str, str]]:
        """The ``--images`` ranked by a text query: (file, "score") pairs, best first."""
        self._require_embeddings()
        if not self.images:
            raise ValueError("no image folder: start zoo demo with --images FOLDER")
        pixels = [torch.from_numpy(read_raster(p).pixels) for p in self.images]
        resized = [
            F.interpolate(p[None], size=(self.size, self.size), mode="bilinear", antialias=True)[0]
            for p in pixels
        ]
        tokens = self.model.tokenize([query])
        scores = (self.embed_images(resized) @ self.model.encode_text(**tokens).T)[:, 0]
        order = scores.argsort(descending=True)[:top].tolist()
        return [(str(self.images[i]), f"{scores[i]:.3f}") for i in order]


def build_app(demo: Demo) -> Any:
    """The Gradio page of ``demo`` (Blocks; not launched)."""
    import gradio as gr

    name = type(demo.model).__name__
    examples = [str(p) for p in demo.images[:8]]
    with gr.Blocks(title=f"zoo demo: {name}") as app:
        gr.Markdown(f"# {name}\nUpload or pick an image, then ask.")
        with gr.Row():
            image = gr.Image(type="numpy", label="image")
            with gr.Column():
                if demo.kind == "embedding":
                    scores = gr.Label(num_top_classes=5, label="zero-shot classes")
                    gr.Button("Classify").click(demo.classify, image, scores, api_name="classify")
                    query = gr.Textbox(label="text query", value="a satellite image of a lake")
                    gallery = gr.Gallery(label="the image folder, ranked", columns=4)
                    gr.Button("Rank the folder").click(demo.rank, query, gallery, api_name="rank")
                else:
                    question = gr.Textbox(label="question", value=_default_question(demo))
                    answer = gr.Textbox(label="answer")
                    overlay = gr.AnnotatedImage(label="masks" if demo.kind == "masks" else "image")
                    gr.Button("Ask").click(
                        demo.answer, [image, question], [answer, overlay], api_name="answer"
                    )
        if examples:
            gr.Examples(examples, image)
    return app


def _default_question(demo: Demo) -> str:
    return "Please segment the building." if demo.kind == "masks" else "Describe the image briefly."


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``zoo demo`` (config overrides pass through)."""
    parser = run_parser("zoo demo", __doc__, "a checkpoint, state dict or safetensors export")
    parser.add_argument("--images", default=None, help="a folder of images to pick from (and rank)")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    return parser


def main(argv: list[str] | None = None, block: bool = True) -> Any:
    """Run ``zoo demo``; returns the launched Gradio app (``block=False`` returns at once)."""
    parser = build_parser()
    args, overrides = parser.parse_known_args(argv)
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        parser.error("zoo demo needs Gradio: pip install 'rs-vlm-zoo[demo]'")
    cli = build_from_configs(args.config, args.ckpt_path, overrides)
    images = Path(args.images) if args.images else None
    if images is not None and not images.is_dir():
        parser.error(f"--images {images} is not a folder")
    app = build_app(Demo(cli.model, cli.datamodule, images))
    app.launch(
        server_name=args.host, server_port=args.port, prevent_thread_lock=not block, quiet=not block
    )
    return app


if __name__ == "__main__":
    main()
