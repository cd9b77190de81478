"""configs/fuse/stage1.yaml and stage2.yaml start where the FUSE authors start.

Stage 1 reads LLaVA-1.5's pretrained projector (``llava_projector``) and keeps the configured
tower and LLM; stage 2 starts every weight from stage 1's checkpoint. The paper configs are
parsed through the real CLI, made tiny on the command line (the models, the data's tokenizer,
one CPU), with a tiny random stand-in of LLaVA's stage-1 release in a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.encoders.test_llava import word_tokenizer
from zoo.encoders.llava import load_llava_projector
from zoo.main import main

VISION_WIDTH, LLM_WIDTH = 128, 128  # zoo_vit_tiny's and the tiny Llama's


def tiny_overrides(tokenizer: Path, root: Path) -> list[str]:
    """The paper configs made tiny: one CPU, no logger, a tiny ViT and Llama, 64 px."""
    return [
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.logger=false",
        "--model.init_args.vision.name=zoo_vit_tiny",
        "--model.init_args.vision.pretrained=false",
        "--model.init_args.llm.name=tiny",
        "--model.init_args.views.detail_layers=[1,2,3]",
        "--model.init_args.views.window_sizes=[128,64]",
        "--model.init_args.views.canvas_size=128",
        "--model.init_args.inject.layers=[1,2]",
        f"--data.init_args.root={root}",
        f"--data.init_args.tokenizer={tokenizer}",
        "--data.init_args.image_size=64",
        "--data.init_args.num_workers=0",
    ]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """LLaVA-1.5's stage-1 release (liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5),
    tiny and random: config.json and an fp16 mm_projector.bin with the original key names."""
    folder = tmp_path_factory.mktemp("llava-pretrain")
    torch.manual_seed(3)
    weights = {
        "model.mm_projector.0.weight": torch.randn(LLM_WIDTH, VISION_WIDTH).half(),
        "model.mm_projector.0.bias": torch.randn(LLM_WIDTH).half(),
        "model.mm_projector.2.weight": torch.randn(LLM_WIDTH, LLM_WIDTH).half(),
        "model.mm_projector.2.bias": torch.randn(LLM_WIDTH).half(),
    }
    torch.save(weights, folder / "mm_projector.bin")
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlavaLlamaForCausalLM"],
                "model_type": "llava",
                "hidden_size": LLM_WIDTH,
                "mm_hidden_size": VISION_WIDTH,
                "mm_projector_type": "mlp2x_gelu",
                "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch",
                "mm_vision_tower": "openai/clip-vit-large-patch14-336",
            }
        )
    )
    return folder, weights


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("vicuna-tokenizer")
    word_tokenizer(with_image=False).save_pretrained(folder)
    return folder


def assert_projector_is(model, weights: dict[str, torch.Tensor]) -> None:
    for index in (0, 2):
        for name in ("weight", "bias"):
            expected = weights[f"model.mm_projector.{index}.{name}"].float()
            torch.testing.assert_close(
                getattr(model.projector[index], name).detach(), expected, rtol=0, atol=0
            )


def test_stage1_starts_the_projector_from_llava_and_stage2_from_stage1(
    release, tokenizer, tmp_path
):
    folder, weights = release
    common = tiny_overrides(tokenizer, tmp_path / "data")
    with pytest.warns(UserWarning, match="trained on tower block -2"):  # the authors read -1
        cli = main(
            [
                "--config",
                "configs/fuse/stage1.yaml",
                *common,
                f"--model.init_args.llava_projector={folder}",
            ],
            run=False,
        )
    stage1 = cli.model
    assert cli.config["model"]["init_args"]["llava_projector"] == str(folder)
    assert_projector_is(stage1, weights)
    # Only the projector: the tower and the LLM are the configured ones, the data's settings stay.
    assert type(stage1.vision).__name__ == "VisionTransformer"
    assert stage1.llm.config.hidden_size == LLM_WIDTH and cli.datamodule.image_size == 64
    # The paper config's own value is the release's Hub id, looked up in the Hugging Face cache
    # (the CLI wraps the FileNotFoundError that says how to download it).
    with pytest.raises(
        (FileNotFoundError, ValueError),
        match="llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5' is neither a local folder",
    ):
        main(["--config", "configs/fuse/stage1.yaml", *common], run=False)

    # Stage 2 on stage 1: no projector read, every weight from stage 1's checkpoint.
    with torch.no_grad():
        for param in stage1.parameters():  # "trained": far from LLaVA's and from a fresh init
            param.add_(0.5)
    ckpt = tmp_path / "stage1.ckpt"  # as Lightning writes it (the tiny Llama ties its embeddings)
    torch.save({"state_dict": stage1.state_dict()}, ckpt)
    cli = main(
        [
            "--config",
            "configs/fuse/stage1.yaml",
            "--config",
            "configs/fuse/stage2.yaml",
            *common,
            f"--model.init_args.stage.init_checkpoint={ckpt}",
        ],
        run=False,
    )
    assert cli.config["model"]["init_args"]["llava_projector"] is None
    stage2 = cli.model
    for name, value in stage1.state_dict().items():
        torch.testing.assert_close(stage2.state_dict()[name], value, rtol=0, atol=0, msg=name)

    # The authors' stage 2 injects before fewer layers (3, 5, 7 after 1, 3, 5, 7): the block of the
    # layer left out is dropped, every kept block starts from stage 1's block at the same layer.
    cli = main(
        [
            "--config",
            "configs/fuse/stage1.yaml",
            "--config",
            "configs/fuse/stage2.yaml",
            *common,
            f"--model.init_args.stage.init_checkpoint={ckpt}",
            "--model.init_args.inject.layers=[2]",
        ],
        run=False,
    )
    fewer = cli.model
    assert sorted(fewer.injection) == ["2"] and fewer.inject_layers == [2]
    for name, value in stage1.state_dict().items():
        if not name.startswith("injection.1."):
            torch.testing.assert_close(fewer.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_projector_sources_and_their_errors(release, tmp_path):
    """The release folder, its .bin file, a transformers-layout folder; wrong keys are named."""
    folder, weights = release
    from_folder = load_llava_projector(folder)
    assert from_folder.feature_layer == -2
    from_file = load_llava_projector(folder / "mm_projector.bin")
    hf = tmp_path / "llava-hf"
    hf.mkdir()
    names = {"0": "linear_1", "2": "linear_2"}
    save_file(
        {
            f"model.multi_modal_projector.{names[k.split('.')[2]]}.{k.split('.')[3]}": v
            for k, v in weights.items()
        },
        str(hf / "model.safetensors"),
    )
    (hf / "config.json").write_text(json.dumps({"vision_feature_layer": -1}))
    from_hf = load_llava_projector(hf)
    assert from_hf.feature_layer == -1
    for source in (from_folder, from_file, from_hf):
        assert sorted(source.projector) == ["0.bias", "0.weight", "2.bias", "2.weight"]
        for key, value in source.projector.items():
            assert value.dtype == torch.float32
            torch.testing.assert_close(value, weights[f"model.mm_projector.{key}"].float())
    bad = tmp_path / "bad.bin"
    torch.save({"model.mm_projector.0.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ValueError, match=r"found \['0.weight'\]"):
        load_llava_projector(bad)
