"""LLaVA-1.5 checkpoints in the zoo: parity with transformers' LlavaForConditionalGeneration.

Tiny random checkpoints are written to temporary folders in both layouts (transformers' and
the original repository's); FUSE with injection and windows off is LLaVA's anatomy, so its
logits and greedy answers must equal transformers' on the same image and prompt.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from zoo.conversation_formats import render, tokenize_messages
from zoo.data.datamodules import ConversationDataModule
from zoo.data.tokenize import build_tokenizer
from zoo.encoders.llava import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    llava_processor,
)
from zoo.encoders.vision import CLIPVisionTower
from zoo.models import (
    FUSE,
    Aquila,
    FuseInjection,
    FuseViews,
    GenerationConfig,
    GeoPix,
    MaskDecoderConfig,
    MemoryConfig,
)

WORDS = [f"w{i}" for i in range(40)] + ["USER:", "ASSISTANT:", "what", "is", "here", "?"]
IMAGE_SIZE, PATCH = 32, 8  # a 4x4 grid: 16 visual tokens
TOKENS = (IMAGE_SIZE // PATCH) ** 2


def word_tokenizer(with_image: bool) -> PreTrainedTokenizerFast:
    """A Llama-like word-level tokenizer (<unk>, <s>, </s>; <image> as LLaVA-HF adds it)."""
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate([*specials, *WORDS])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    if with_image:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def clip_config() -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=32,
    )


def llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
    )


def write_processor(folder: Path) -> None:
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                "size": {"shortest_edge": IMAGE_SIZE},
                "image_mean": list(OPENAI_CLIP_MEAN),
                "image_std": list(OPENAI_CLIP_STD),
            }
        )
    )


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory) -> tuple[Path, LlavaForConditionalGeneration]:
    """transformers' layout (llava-hf/llava-1.5-7b-hf), tiny and random."""
    folder = tmp_path_factory.mktemp("llava-hf")
    tokenizer = word_tokenizer(with_image=True)
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=clip_config(),
        text_config=llama_config(len(tokenizer)),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    write_processor(folder)
    return folder, model


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory) -> tuple[Path, LlamaForCausalLM, CLIPVisionModel, dict]:
    """The original repository's layout (liuhaotian/llava-v1.5-7b): a Llama with
    model.mm_projector.{0,2}.* and its CLIP tower in a folder named by mm_vision_tower."""
    root = tmp_path_factory.mktemp("llava-original")
    folder, tower_folder = root / "llava-v1.5", root / "clip-vit"
    tokenizer = word_tokenizer(with_image=False)  # LLaVA splices an index, no <image> token
    torch.manual_seed(1)
    llama = LlamaForCausalLM(llama_config(len(tokenizer))).eval()
    tower = CLIPVisionModel(clip_config()).eval()
    tower.save_pretrained(tower_folder)
    write_processor(tower_folder)
    projector = {
        "model.mm_projector.0.weight": torch.randn(64, 32) * 0.1,
        "model.mm_projector.0.bias": torch.randn(64) * 0.1,
        "model.mm_projector.2.weight": torch.randn(64, 64) * 0.1,
        "model.mm_projector.2.bias": torch.randn(64) * 0.1,
    }
    folder.mkdir()
    save_file({**llama.state_dict(), **projector}, str(folder / "model.safetensors"))
    config = llama.config.to_dict() | {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava",
        "mm_vision_tower": str(tower_folder),
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 32,
        "image_aspect_ratio": "pad",
        "mm_use_im_start_end": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return folder, llama, tower, projector


def zoo_fuse(folder: Path) -> FUSE:
    """FUSE as LLaVA: windows and injection off, the tokenizer the data would build."""
    processor = llava_processor(folder)
    tokenizer = build_tokenizer(processor.tokenizer, chat=True)
    return FUSE(
        tokenizer=tokenizer,
        llava=str(folder),
        inject=FuseInjection(layers=[]),
        views=FuseViews(multi_scale=False, global_layer=-2),
        image_size=IMAGE_SIZE,
        generation=GenerationConfig(max_new_tokens=6),
    ).eval()


def prompt(tokenizer, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    text = ["<image> what is here ? w3 w5", "<image> what is w7 w1 ? w2"][:batch]
    ids = torch.tensor([tokenizer(t, add_special_tokens=False)["input_ids"] for t in text])
    return ids, torch.ones_like(ids)


def expand_image(ids: torch.Tensor, image_id: int) -> torch.Tensor:
    """transformers' input: the <image> token repeated once per visual token."""
    rows = [
        torch.cat([torch.full((TOKENS,), image_id) if t == image_id else t[None] for t in row])
        for row in ids
    ]
    return torch.stack(rows)


def assert_parity(zoo: FUSE, reference: LlavaForConditionalGeneration, vocab: int) -> None:
    torch.manual_seed(2)
    image = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    ids, mask = prompt(zoo.tokenizer)
    hf_ids = expand_image(ids, zoo.image_token_id)
    with torch.no_grad():
        ours = zoo(image, ids, mask).logits[..., :vocab]
        theirs = reference(
            input_ids=hf_ids, attention_mask=torch.ones_like(hf_ids), pixel_values=image
        ).logits[..., :vocab]
    assert ours.shape == theirs.shape == (2, hf_ids.shape[1], vocab)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    answers = zoo.generate(image, ids, mask)
    out = reference.generate(
        input_ids=hf_ids,
        attention_mask=torch.ones_like(hf_ids),
        pixel_values=image,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=zoo.tokenizer.eos_token_id,
        pad_token_id=zoo.tokenizer.pad_token_id,
    )
    expected = zoo.tokenizer.batch_decode(out[:, hf_ids.shape[1] :], skip_special_tokens=True)
    assert answers == [e.strip() for e in expected]
    assert any(answers), "the random model should say something"


def test_hf_layout_matches_transformers(hf_checkpoint):
    folder, reference = hf_checkpoint
    zoo = zoo_fuse(folder)
    assert isinstance(zoo.vision, CLIPVisionTower)
    assert len(zoo.tokenizer) == reference.config.text_config.vocab_size  # no resize
    assert_parity(zoo, reference, reference.config.text_config.vocab_size)


def test_original_layout_matches_transformers(original_checkpoint):
    folder, llama, tower, projector = original_checkpoint
    zoo = zoo_fuse(folder)
    vocab = llama.config.vocab_size
    assert zoo.image_token_id == vocab  # the data adds <image> after the Llama's vocabulary
    # The reference: transformers' LLaVA with the files' weights, and the zoo's added row for
    # <image> (never a visual-token input, so it only extends the vocabulary).
    config = LlavaConfig(
        vision_config=tower.config,
        text_config=llama_config(vocab + 1),
        image_token_id=vocab,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    reference = LlavaForConditionalGeneration(config).eval()
    body = reference.model
    body.vision_tower.load_state_dict(tower.state_dict())
    state = llama.state_dict()
    embed = zoo.llm.get_input_embeddings().weight.detach()
    head = zoo.llm.get_output_embeddings().weight.detach()
    torch.testing.assert_close(embed[:vocab], state["model.embed_tokens.weight"])
    body.language_model.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        | {"embed_tokens.weight": embed}
    )
    reference.lm_head.weight.data.copy_(head)
    for i, name in ((0, "linear_1"), (2, "linear_2")):
        getattr(body.multi_modal_projector, name).weight.data.copy_(
            projector[f"model.mm_projector.{i}.weight"]
        )
        getattr(body.multi_modal_projector, name).bias.data.copy_(
            projector[f"model.mm_projector.{i}.bias"]
        )
    assert_parity(zoo, reference, vocab + 1)


def test_original_layout_loads_a_trained_tower_and_relative_folder(original_checkpoint, tmp_path):
    """Tower weights saved in the checkpoint (model.vision_tower.vision_tower.*) replace the
    folder's; mm_vision_tower may be relative to the checkpoint."""
    folder, llama, tower, projector = original_checkpoint
    copy = tmp_path / "ckpt"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    tower_copy = copy / "tower"
    tower_copy.mkdir()
    for f in Path(json.loads((folder / "config.json").read_text())["mm_vision_tower"]).iterdir():
        (tower_copy / f.name).write_bytes(f.read_bytes())
    config = json.loads((copy / "config.json").read_text()) | {"mm_vision_tower": "tower"}
    (copy / "config.json").write_text(json.dumps(config))
    trained = {
        f"model.vision_tower.vision_tower.{k}": v + 1.0 for k, v in tower.state_dict().items()
    }
    save_file({**llama.state_dict(), **projector, **trained}, str(copy / "model.safetensors"))
    zoo = zoo_fuse(copy)
    for key, value in tower.state_dict().items():
        torch.testing.assert_close(zoo.vision.model.state_dict()[key], value + 1.0)


def test_projector_and_feature_layer_come_from_the_checkpoint(hf_checkpoint):
    folder, reference = hf_checkpoint
    zoo = zoo_fuse(folder)
    torch.testing.assert_close(
        zoo.projector[0].weight, reference.model.multi_modal_projector.linear_1.weight
    )
    with pytest.warns(UserWarning, match="global_layer: -2 gives LLaVA's anatomy"):
        FUSE(
            tokenizer=zoo.tokenizer,
            llava=str(folder),
            inject=FuseInjection(layers=[]),
            views=FuseViews(multi_scale=False, global_layer=-1),
            image_size=IMAGE_SIZE,
        )


def test_geopix_starts_from_llava(hf_checkpoint):
    """GeoPix's tower, projector and LLM from LLaVA; its mask decoder and memory from scratch;
    the segmentation tokens extend LLaVA's vocabulary."""
    from zoo.data.referring import add_seg_tokens

    folder, reference = hf_checkpoint
    tokenizer = add_seg_tokens(zoo_fuse(folder).tokenizer, 2, 3)
    model = GeoPix(
        tokenizer=tokenizer,
        llava=str(folder),
        class_names=["ship", "tank"],
        feature_layers=[0, 1],
        decoder=MaskDecoderConfig(dim=16),
        memory=MemoryConfig(capacity=2),
        image_size=IMAGE_SIZE,
    )
    assert isinstance(model.vision, CLIPVisionTower)
    torch.testing.assert_close(
        model.projector[2].bias, reference.model.multi_modal_projector.linear_2.bias
    )
    assert model.llm.get_input_embeddings().num_embeddings == len(tokenizer)
    body = reference.model.language_model.layers[0].self_attn.q_proj.weight
    torch.testing.assert_close(model.llm.model.layers[0].self_attn.q_proj.weight, body)


def test_a_family_without_llavas_anatomy_is_refused(hf_checkpoint):
    """Aquila needs ConvNeXt stage maps; a LLaVA checkpoint has a one-scale CLIP ViT."""
    folder, _ = hf_checkpoint
    with pytest.raises(ValueError, match="use llava with FUSE or GeoPix"):
        Aquila(tokenizer=zoo_fuse(folder).tokenizer, llava=str(folder), image_size=IMAGE_SIZE)


def test_fuse_modules_start_as_configured_and_as_the_identity(hf_checkpoint):
    """Injection and windows are FUSE's own: they are built (and trained) on top of LLaVA. Each
    injection starts as the identity (``residual_init`` 0), so FUSE with its windows and two
    injections computes transformers' LLaVA's logits and loss until training opens them."""
    folder, reference = hf_checkpoint
    zoo = FUSE(
        tokenizer=zoo_fuse(folder).tokenizer,
        llava=str(folder),
        inject=FuseInjection(layers=[0, 1]),
        views=FuseViews(window_sizes=[32, 16], canvas_size=64, detail_layers=[0, 1, 2]),
        image_size=IMAGE_SIZE,
    )
    assert sorted(zoo.injection) == ["0", "1"]
    image = torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    ids, mask = prompt(zoo.tokenizer, batch=1)
    out = zoo(image, ids, mask, labels=ids.clone())
    assert torch.isfinite(out.loss)
    assert [float(block.alpha.detach()) for block in zoo.injection.values()] == [0.0, 0.0]
    vocab = reference.config.text_config.vocab_size
    torch.manual_seed(2)
    image = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    ids, mask = prompt(zoo.tokenizer)
    hf_ids = expand_image(ids, zoo.image_token_id)
    hf_labels = hf_ids.masked_fill(hf_ids == zoo.image_token_id, -100)
    zoo.eval()
    with torch.no_grad():
        ours = zoo(image, ids, mask, labels=ids.clone())
        theirs = reference(
            input_ids=hf_ids,
            attention_mask=torch.ones_like(hf_ids),
            pixel_values=image,
            labels=hf_labels,
        )
        torch.testing.assert_close(
            ours.logits[..., :vocab], theirs.logits[..., :vocab], atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(ours.loss, theirs.loss, atol=1e-5, rtol=1e-5)
        for block in zoo.injection.values():  # opened, the windows' details reach the logits
            block.alpha.fill_(1.0)
        opened = zoo(image, ids, mask).logits[..., :vocab]
    assert not torch.allclose(opened, theirs.logits[..., :vocab], atol=1e-3)


def test_datamodule_takes_the_processor(hf_checkpoint, original_checkpoint):
    for folder in (hf_checkpoint[0], original_checkpoint[0]):
        dm = ConversationDataModule(root="unused", image_size=336, llava=str(folder))
        assert dm.image_size == IMAGE_SIZE
        torch.testing.assert_close(dm.aug.mean.flatten(), torch.tensor(OPENAI_CLIP_MEAN) * 255.0)
        tokenizer = dm.tokenizer
        assert dm.conversation == "vicuna_v1"  # LLaVA-1.5's format, by default with llava
        messages = [
            {"role": "user", "content": "<image>\nwhat is here ?"},
            {"role": "assistant", "content": "w1"},
        ]
        text, _ = render(dm.conversation, tokenizer, messages)
        assert text.startswith("<s>A chat between a curious user")
        assert text.endswith("USER: <image>\nwhat is here ? ASSISTANT: w1</s>")
        ids, labels = tokenize_messages(dm.conversation, tokenizer, messages)
        assert (
            [i for i in labels if i != -100]
            == ids[-2:]
            == [tokenizer.convert_tokens_to_ids("w1"), tokenizer.eos_token_id]
        )


def test_cli_links_llava_to_the_data(hf_checkpoint):
    from zoo.main import main

    folder, _ = hf_checkpoint
    cli = main(
        [
            "--config",
            "configs/fuse.yaml",
            "--trainer.logger=false",
            f"--model.init_args.llava={folder}",
            "--model.init_args.inject.layers=[]",
            "--model.init_args.views.multi_scale=false",
        ],
        run=False,
    )
    assert cli.datamodule.image_size == IMAGE_SIZE == cli.model.image_size
    assert cli.datamodule.conversation == cli.model.conversation == "vicuna_v1"
    assert isinstance(cli.model.vision, CLIPVisionTower)
