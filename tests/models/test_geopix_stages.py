"""configs/geopix/stage1.yaml and stage2.yaml start where GeoPix's §V-A starts: from LLaVA-1.5.

The paper configs are parsed through the real CLI and made tiny on the command line (one CPU, a
tiny random LLaVA-1.5 in transformers' layout, the embedded dataset in the COCO + refs layout):
``llava:`` replaces the vision tower, projector and LLM, and the data takes LLaVA's tokenizer,
chat template and image processor, so the segmentation tokens extend LLaVA's vocabulary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.encoders.test_llava import IMAGE_SIZE, hf_checkpoint  # noqa: F401  (the fixture)
from zoo.data import embedded
from zoo.encoders.vision import CLIPVisionTower
from zoo.main import main

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])


def tiny_overrides(llava: Path, root: Path) -> list[str]:
    """The paper configs made tiny: one CPU, no logger, the tiny LLaVA, small GeoPix modules."""
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.logger=false",
        "--trainer.accumulate_grad_batches=1",
        f"--model.init_args.llava={llava}",
        "--model.init_args.llm.dtype=null",
        "--model.init_args.feature_layers=[0,1]",
        "--model.init_args.decoder.dim=16",
        "--model.init_args.decoder.heads=2",
        "--model.init_args.memory.capacity=2",
        "--model.init_args.memory.dim=8",
        f"--data.init_args.root={root}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=2",
        "--data.init_args.mix_file=conversations_train.json",
    ]


def test_stages_start_from_llava(hf_checkpoint, tmp_path):  # noqa: F811
    folder, reference = hf_checkpoint
    root = embedded.generate(tmp_path / "data", num_train=8, num_val=4, num_test=4, progress=False)
    common = tiny_overrides(folder, root)
    cli = main(["--config", "configs/geopix/stage1.yaml", *common], run=False)
    model, dm = cli.model, cli.datamodule
    assert cli.config["model"]["init_args"]["llava"] == str(folder)
    assert isinstance(model.vision, CLIPVisionTower)
    torch.testing.assert_close(
        model.projector[2].bias, reference.model.multi_modal_projector.linear_2.bias
    )
    body = model.llm.get_base_model().model.layers[0].self_attn.k_proj.weight  # not a LoRA target
    torch.testing.assert_close(
        body, reference.model.language_model.layers[0].self_attn.k_proj.weight
    )
    # LLaVA's tokenizer, format and image processor reach the data; the [SEG] tokens extend it.
    assert Path(dm.tokenizer.name_or_path) == Path(folder)
    assert dm.conversation == model.conversation == "vicuna_v1"
    assert model.llm.get_input_embeddings().num_embeddings == len(dm.tokenizer)
    assert dm.image_size == model.image_size == IMAGE_SIZE
    # The paper's stage-1 LoRA (r 128 on W_q, W_v) sits on LLaVA's LLM.
    assert model.llm.peft_config["default"].r == 128
    assert set(model.llm.peft_config["default"].target_modules) == {"q_proj", "v_proj"}

    # Stage 2 on stage 1: every weight from stage 1's checkpoint (its LoRA merged), LoRA r 8.
    with torch.no_grad():
        for param in model.parameters():  # "trained": far from LLaVA's and from a fresh init
            param.add_(0.25)
    merged = {k: v.clone() for k, v in model.llm.get_base_model().state_dict().items()}
    ckpt = tmp_path / "stage1.ckpt"
    hparams = {"stage": {"lora_rank": 128, "lora_alpha": 256}}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, ckpt)
    cli = main(
        [
            "--config",
            "configs/geopix/stage1.yaml",
            "--config",
            "configs/geopix/stage2.yaml",
            *common,
            f"--model.init_args.stage.init_checkpoint={ckpt}",
        ],
        run=False,
    )
    stage2 = cli.model
    assert stage2.llm.peft_config["default"].r == 8
    k_proj = "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(
        stage2.llm.get_base_model().state_dict()[k_proj], merged[k_proj], rtol=0, atol=0
    )
    torch.testing.assert_close(stage2.projector[2].bias, model.projector[2].bias, rtol=0, atol=0)


def test_stage1_trains_a_step_from_llava(hf_checkpoint, tmp_path):  # noqa: F811
    folder, _ = hf_checkpoint
    root = embedded.generate(tmp_path / "data", num_train=8, num_val=4, num_test=4, progress=False)
    cli = main(
        [
            "--config",
            "configs/geopix/stage1.yaml",
            *tiny_overrides(folder, root),
            "--trainer.fast_dev_run=1",
            "--trainer.callbacks=[]",
            f"--trainer.default_root_dir={tmp_path}",
        ],
        run=False,
    )
    before = {k: v.detach().clone() for k, v in cli.model.named_parameters()}
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.state.finished and torch.isfinite(cli.trainer.callback_metrics["train_loss"])
    moved = {k for k, v in cli.model.named_parameters() if not torch.equal(v, before[k])}
    # The stage's split: LoRA and the connector move (this batch of conversations has no masks,
    # so the decoder gets no gradient), LLaVA's tower and LLM body do not.
    assert any(".lora_" in k for k in moved) and any(k.startswith("projector.") for k in moved)
    assert not any(k.startswith("vision.") for k in moved)
    assert not any(
        k.startswith("llm.") and ".lora_" not in k and "embed" not in k and "lm_head" not in k
        for k in moved
    )
