"""Two CPU processes (gloo) run one fit step of a tiny FUSE with LoRA, under DDP and under the
zoo's FSDP2 strategy (tests/distributed/fit_step.py); the sharded checkpoint folder consolidates
to DDP's weights and `zoo export` turns it into safetensors that a plain model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.distributed.fit_step import build
from zoo.data import EmbeddedConversationDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.io import read_state_dict

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow  # two processes start twice: about a minute each


def _run(kind: str, workdir: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests/distributed/fit_step.py"), kind, str(workdir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((workdir / "result.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    out = {}
    for kind in ("ddp", "fsdp"):
        workdir = tmp_path_factory.mktemp(kind)
        out[kind] = (_run(kind, workdir), workdir)
    return out


def test_one_step_on_two_processes_ddp_and_fsdp(runs):
    ddp, fsdp = runs["ddp"][0], runs["fsdp"][0]
    assert ddp["world_size"] == fsdp["world_size"] == 2
    assert ddp["strategy"] == "DDPStrategy" and fsdp["strategy"] == "GeneratorFSDPStrategy"
    # FSDP2 units: the decoder layers, the ViT blocks, the embeddings and the model as root.
    assert {"FSDPLlamaDecoderLayer", "FSDPBlock", "FSDPFUSE"} <= set(fsdp["wrapped"])
    assert torch.isfinite(torch.tensor(ddp["loss"])) and ddp["loss"] == pytest.approx(fsdp["loss"])


def test_sharded_checkpoint_consolidates_to_the_ddp_weights(runs):
    sharded = runs["fsdp"][1] / "step.ckpt"
    assert sharded.is_dir() and (sharded / "meta.pt").is_file()
    fsdp, ddp = read_state_dict(sharded), read_state_dict(runs["ddp"][1] / "step.ckpt")
    assert set(fsdp) == set(ddp)
    for key, value in ddp.items():
        torch.testing.assert_close(fsdp[key], value, atol=1e-6, rtol=0, msg=key)
    dm = EmbeddedConversationDataModule(
        str(runs["ddp"][1] / "data"), splits=EmbeddedSplits(8, 4, 4)
    )
    fresh = build(dm)
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    start = fresh.state_dict()
    moved = {k for k in trainable if not torch.equal(start[k], fsdp[k])}
    assert {k for k in trainable if "lora_B" in k or k.endswith(".alpha")} <= moved  # trained
    # (LoRA A gets no gradient at the first step: B starts at zero)
    frozen = [k for k, p in fresh.named_parameters() if not p.requires_grad]
    assert all(torch.equal(start[k], fsdp[k]) for k in frozen)


def test_zoo_export_merges_a_sharded_checkpoint(runs, tmp_path, monkeypatch):
    from safetensors.torch import load_model

    from zoo.export import main

    workdir = runs["fsdp"][1]
    override = tmp_path / "run.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "class_path": "FUSE",
                    "init_args": {
                        "stage": {
                            "train_vision": False,
                            "train_connector": True,
                            "train_llm": False,
                            "lora_rank": 4,
                        }
                    },
                },
                "data": {
                    "class_path": "EmbeddedConversationDataModule",
                    "init_args": {
                        "root": str(workdir / "data"),
                        "splits": {"train": 8, "val": 4, "test": 4},
                    },
                },
            }
        )
    )
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])
    path = main(
        [
            "--config",
            "configs/fuse.yaml",
            "--config",
            str(override),
            "--ckpt_path",
            str(workdir / "step.ckpt"),
            "--output",
            str(tmp_path / "export"),
        ]
    )
    dm = EmbeddedConversationDataModule(str(workdir / "data"), splits=EmbeddedSplits(8, 4, 4))
    dm.prepare_data()
    dm.setup("fit")
    trained = build(dm).eval()
    trained.load_state_dict(read_state_dict(workdir / "step.ckpt"))
    torch.manual_seed(0)
    from zoo.models import FUSE

    plain = FUSE(tokenizer=dm.tokenizer, class_names=dm.class_names).eval()
    load_model(plain, str(path))
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    args = (batch["image"], batch["input_ids"], batch["attention_mask"])
    with torch.no_grad():
        torch.testing.assert_close(plain(*args).logits, trained(*args).logits, atol=1e-4, rtol=0)
