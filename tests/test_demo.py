"""`zoo demo`: the Gradio page, driven as a user would (gradio_client), and a screenshot."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlamaForCausalLM

from zoo.data.images import ImageFolderDataModule
from zoo.data.referring import seg_phrase

gradio = pytest.importorskip("gradio", reason="zoo demo needs the extra: pip install -e '.[demo]'")
from gradio_client import Client, handle_file  # noqa: E402

from zoo.demo import main  # noqa: E402

ROOT = Path(__file__).parents[1]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _images(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in (
        ("lake", (20, 60, 160)),
        ("forest", (30, 120, 40)),
        ("desert", (220, 190, 130)),
    ):
        Image.fromarray(np.full((48, 48, 3), colour, dtype=np.uint8)).save(folder / f"{name}.png")
    return folder


def _launch(config: str, tmp_path: Path, *extra: str):
    port = _free_port()
    app = main(
        [
            "--config",
            str(ROOT / config),
            f"--data.init_args.root={tmp_path / 'data'}",
            "--port",
            str(port),
            *extra,
        ],
        block=False,
    )
    return app, f"http://127.0.0.1:{port}/"


def test_geopix_demo_answers_with_masks_through_gradio_client(tmp_path: Path, monkeypatch):
    tokenizer = ImageFolderDataModule(task="referring").tokenizer
    answer = tokenizer(f"sure, the ship is {seg_phrase(2, 3)} [EOS]", add_special_tokens=False)

    def generate(self, inputs_embeds, attention_mask, **kwargs):
        return torch.tensor(answer["input_ids"]).repeat(len(inputs_embeds), 1)

    monkeypatch.setattr(LlamaForCausalLM, "generate", generate)
    # An untrained mask predictor may score every pixel negative; the page must show what the
    # predictor gives, so its top-left quarter is made positive.
    from zoo.models.geopix import GeoPix

    forward_with_masks = GeoPix.forward_with_masks

    def positive_corner(self, *args, **kwargs):
        out = forward_with_masks(self, *args, **kwargs)
        out[1][..., : out[1].shape[-2] // 2, : out[1].shape[-1] // 2] = 10.0
        return out

    monkeypatch.setattr(GeoPix, "forward_with_masks", positive_corner)
    images = _images(tmp_path / "images")
    app, url = _launch("configs/geopix.yaml", tmp_path, "--images", str(images))
    try:
        client = Client(url, verbose=False)
        text, overlay = client.predict(
            handle_file(str(images / "lake.png")), "Please segment the ship.", api_name="/answer"
        )
        assert text == "sure , the ship is"  # the word-level tokenizer decodes with spaces
        assert Path(overlay["image"]).is_file()
        (annotation,) = overlay["annotations"]  # one phrase: its mask, labelled
        assert annotation["label"] == "the ship (ship)"
        mask = np.asarray(Image.open(annotation["image"]))
        assert mask.shape[:2] == (64, 64) and mask.any()
    finally:
        app.close()


def test_flavars_demo_scores_classes_and_ranks_the_folder(tmp_path: Path):
    images = _images(tmp_path / "images")
    app, url = _launch("configs/flavars.yaml", tmp_path, "--images", str(images))
    try:
        client = Client(url, verbose=False)
        scores = client.predict(handle_file(str(images / "forest.png")), api_name="/classify")
        confidences = {c["label"]: c["confidence"] for c in scores["confidences"]}
        assert len(confidences) == 5 and set(confidences) <= {
            "residential",
            "industrial",
            "farmland",
            "forest",
            "lake",
            "airport",
            "harbour",
            "desert",
            "snow",
            "river",
        }
        assert 0 < sum(confidences.values()) <= 1 + 1e-6
        ranked = client.predict("a satellite image of a lake", api_name="/rank")
        assert len(ranked) == 3
        files = [r["image"] if isinstance(r["image"], str) else r["image"]["path"] for r in ranked]
        assert sorted(Path(f).stem for f in files) == ["desert", "forest", "lake"]
        assert [float(r["caption"]) for r in ranked] == sorted(
            (float(r["caption"]) for r in ranked), reverse=True
        )
    finally:
        app.close()


@pytest.mark.slow
def test_demo_page_renders_in_headless_chromium(tmp_path: Path):
    browser = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    if browser is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium")
    images = _images(tmp_path / "images")
    app, url = _launch("configs/geopix.yaml", tmp_path, "--images", str(images))
    shot = tmp_path / "demo.png"
    try:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,900",
                "--virtual-time-budget=15000",
                f"--screenshot={shot}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        app.close()
    page = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert page.shape == (900, 1280)
    # A rendered page: mostly light background with dark text and widgets, not a blank sheet.
    dark = (page < 128).mean()
    assert page.std() > 10 and 0.002 < dark < 0.5, (page.std(), dark)
    Path(os.environ.get("ZOO_DEMO_SCREENSHOT", tmp_path / "kept.png")).write_bytes(
        shot.read_bytes()
    )
