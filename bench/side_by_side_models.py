"""The pairs of ``bench/side_by_side.py``: both sides built at matched dimensions.

The zoo's side is built through the families' public constructors (encoders by name or by a
folder saved here, ``llava:`` for the LLaVA anatomy) and trained through its own
``training_step``, so the harness follows the families' code as it changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from timing import Pair, make_side
from torch import Tensor

ALL_TRAINABLE = {"train_vision": True, "train_connector": True, "train_llm": True}

#: Dimensions per scale. Vision towers of FLAVARS are timm names (matched on the HF side).
SCALES: dict[str, dict[str, Any]] = {
    "test": {
        "flava": {
            "vit": "zoo_vit_tiny",
            "image": 32,
            "patch": 8,
            "vit_width": 128,
            "vit_depth": 4,
            "vit_heads": 4,
            "vit_mlp": 256,
            "text_width": 128,
            "text_depth": 1,
            "text_heads": 4,
            "fusion_width": 128,
            "fusion_depth": 1,
            "fusion_heads": 4,
            "embed": 32,
            "batch": 4,
            "text_tokens": 12,
        },
        "clip": {"batch": 4},
        "llava": {
            "image": 32,
            "patch": 8,
            "vit_width": 32,
            "vit_depth": 3,
            "vit_heads": 4,
            "vit_mlp": 64,
            "llm_width": 64,
            "llm_mlp": 128,
            "llm_depth": 2,
            "llm_heads": 4,
            "llm_kv_heads": 2,
            "vocab": None,
            "batch": 2,
            "text_tokens": 24,
            "detail_layers": [0, 1, 2],
            "windows": [32, 16],
            "canvas": 32,
            "inject": [0, 1],
            "geopix_layers": [0, 1],
            "aquila_vision": "zoo_convnext_tiny",
            "aquila_image": 32,
            "aquila_stages": [0, 1],
            "aquila_grid": 4,
            "aquila_mda": [0, 1],
        },
    },
    "cpu": {
        "flava": {
            "vit": "zoo_vit_tiny",
            "image": 64,
            "patch": 8,
            "vit_width": 128,
            "vit_depth": 4,
            "vit_heads": 4,
            "vit_mlp": 256,
            "text_width": 128,
            "text_depth": 2,
            "text_heads": 4,
            "fusion_width": 128,
            "fusion_depth": 2,
            "fusion_heads": 4,
            "embed": 128,
            "batch": 16,
            "text_tokens": 32,
        },
        "clip": {"batch": 32},
        "llava": {
            "image": 64,
            "patch": 8,
            "vit_width": 128,
            "vit_depth": 4,
            "vit_heads": 4,
            "vit_mlp": 512,
            "llm_width": 128,
            "llm_mlp": 256,
            "llm_depth": 4,
            "llm_heads": 4,
            "llm_kv_heads": 2,
            "vocab": None,
            "batch": 8,
            "text_tokens": 64,
            "detail_layers": [1, 2, 3],
            "windows": [64, 32],
            "canvas": 64,
            "inject": [1, 2],
            "geopix_layers": [1, 3],
            "aquila_vision": "zoo_convnext_tiny",
            "aquila_image": 64,
            "aquila_stages": [0, 1],
            "aquila_grid": 8,
            "aquila_mda": [1, 3],
        },
    },
    "cuda": {
        "flava": {
            "vit": "vit_base_patch16_224",
            "image": 224,
            "patch": 16,
            "vit_width": 768,
            "vit_depth": 12,
            "vit_heads": 12,
            "vit_mlp": 3072,
            "text_width": 768,
            "text_depth": 12,
            "text_heads": 12,
            "fusion_width": 768,
            "fusion_depth": 6,
            "fusion_heads": 12,
            "embed": 768,
            "batch": 64,
            "text_tokens": 64,
        },
        "clip": {
            "batch": 256,
            "text_width": 512,
            "text_depth": 12,
            "text_heads": 8,
            "embed": 512,
            "text_tokens": 77,
        },
        "llava": {
            "image": 336,
            "patch": 14,
            "vit_width": 1024,
            "vit_depth": 24,
            "vit_heads": 16,
            "vit_mlp": 4096,
            "llm_width": 2048,
            "llm_mlp": 5632,
            "llm_depth": 22,
            "llm_heads": 32,
            "llm_kv_heads": 4,
            "vocab": 32000,
            "batch": 8,
            "text_tokens": 448,
            "detail_layers": [7, 15, 23],
            "windows": [336, 168],
            "canvas": 672,
            "inject": [4, 8, 12, 16],
            "geopix_layers": [11, 23],
            "aquila_vision": "convnext_xxlarge",
            "aquila_image": 384,
            "aquila_stages": [0, 1, 2],
            "aquila_grid": 24,
            "aquila_mda": [4, 12],
        },
    },
}


def scale_dims(scale: str) -> dict[str, Any]:
    dims = {k: dict(v) for k, v in SCALES[scale].items()}
    dims["clip"] = {**dims["flava"], **dims["clip"]}
    return dims


# ------------------------------------------------------------------------------- data
def text_tokenizer():
    """The embedded data's word-level tokenizer (BERT's specials, ``<image>``), with
    GeoPix's segmentation tokens for two scales."""
    from zoo.data.datamodules import embedded_vocabulary
    from zoo.data.tokenize import word_level_tokenizer

    tokenizer = word_level_tokenizer(embedded_vocabulary())
    tokenizer.add_tokens([f"[SEG{s}_{i}]" for s in range(2) for i in range(3)], special_tokens=True)
    return tokenizer


def _words(tokenizer, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    first = max(tokenizer.all_special_ids) + 1
    return torch.randint(first, len(tokenizer), shape, generator=generator)


def caption_batch(
    tokenizer, batch: int, tokens: int, image: int, device: torch.device
) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = _words(tokenizer, (batch, tokens), g)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    location = torch.stack(
        [torch.rand(batch, generator=g) * 160 - 80, torch.rand(batch, generator=g) * 360 - 180],
        dim=1,
    )
    out = {
        "image": torch.randn(batch, 3, image, image, generator=g),
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "location": location,
    }
    return {k: v.to(device) for k, v in out.items()}


# ------------------------------------------------------------------- FLAVARS vs FLAVA / CLIP
def _bert_folder(d: dict[str, Any], vocab: int, folder: Path) -> str:
    """A random BERT at the pair's text dimensions, saved for FLAVARS' ``text.name``; no
    dropout, as FLAVA's and CLIP's text towers."""
    from transformers import BertConfig, BertModel

    path = folder / f"bert-{d['text_width']}x{d['text_depth']}"
    if not path.is_dir():
        config = BertConfig(
            vocab_size=vocab,
            hidden_size=d["text_width"],
            num_hidden_layers=d["text_depth"],
            num_attention_heads=d["text_heads"],
            intermediate_size=4 * d["text_width"],
            max_position_embeddings=128,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        BertModel(config, add_pooling_layer=False).save_pretrained(path)
    return str(path)


def compile_blocks(model: torch.nn.Module) -> int:
    """``torch.compile`` each transformer block of ``model`` in place, as the generators'
    ``speed.compile`` does for theirs (FLAVARS has no such switch): the members of every
    ``blocks`` (timm), ``layer`` (BERT) and ``layers`` (the fusion encoder) container that
    hold parameters.

    Args:
        model: the model whose blocks are compiled.

    Returns:
        How many blocks were compiled.
    """
    blocks = [
        block
        for name, container in model.named_modules()
        if name.rsplit(".", 1)[-1] in {"blocks", "layer", "layers"}
        and isinstance(container, torch.nn.Sequential | torch.nn.ModuleList)
        for block in container
        if next(block.parameters(), None) is not None
        and type(block).__name__ != "SirenLayer"  # the location MLP's layers: not a block
    ]
    for block in blocks:
        block.compile()
    return len(blocks)


def _flavars(d: dict[str, Any], tokenizer, folder: Path, contrastive_only: bool):
    from zoo.encoders.text import TextSpec
    from zoo.encoders.vision import VisionSpec
    from zoo.encoders.zoo_encoders import FusionSpec
    from zoo.models.flavars import FLAVARS, LossWeights, Objectives

    weights = (
        LossWeights(mim=0, mlm=0, itm=0, mmm_image=0, mmm_text=0, location=0)
        if contrastive_only
        else LossWeights()
    )
    return FLAVARS(
        vision=VisionSpec(d["vit"]),
        image_size=d["image"],
        text=TextSpec(_bert_folder(d, len(tokenizer), folder)),
        embed_dim=d["embed"],
        fusion=FusionSpec(d["fusion_width"], d["fusion_depth"], d["fusion_heads"]),
        objectives=Objectives(loss_weights=weights),
        tokenizer=tokenizer,
    )


def flava_pair(
    d: dict[str, Any], folder: Path, device: torch.device, bf16: bool, compile_: bool
) -> Pair:
    from transformers import FlavaConfig, FlavaForPreTraining

    tokenizer = text_tokenizer()
    zoo = _flavars(d, tokenizer, folder, contrastive_only=False)
    if compile_:
        compile_blocks(zoo)
    config = FlavaConfig(
        image_config={
            "hidden_size": d["vit_width"],
            "num_hidden_layers": d["vit_depth"],
            "num_attention_heads": d["vit_heads"],
            "intermediate_size": d["vit_mlp"],
            "image_size": d["image"],
            "patch_size": d["patch"],
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": d["text_width"],
            "num_hidden_layers": d["text_depth"],
            "num_attention_heads": d["text_heads"],
            "intermediate_size": 4 * d["text_width"],
            "max_position_embeddings": 128,
        },
        multimodal_config={
            "hidden_size": d["fusion_width"],
            "num_hidden_layers": d["fusion_depth"],
            "num_attention_heads": d["fusion_heads"],
            "intermediate_size": 4 * d["fusion_width"],
        },
        projection_dim=d["embed"],
        hidden_size=d["fusion_width"],
        init_codebook=False,
    )
    hf = FlavaForPreTraining(config)
    batch = caption_batch(tokenizer, d["batch"], d["text_tokens"], d["image"], device)
    g = torch.Generator().manual_seed(1)
    patches = (d["image"] // d["patch"]) ** 2
    b, t = batch["input_ids"].shape
    text_masked = (torch.rand(b, t, generator=g) < 0.15).to(device)
    text_masked[:, 0] = text_masked[:, -1] = False
    hf_inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pixel_values": batch["image"],
        "input_ids_masked": batch["input_ids"].masked_fill(text_masked, tokenizer.mask_token_id),
        "mlm_labels": batch["input_ids"].masked_fill(~text_masked, -100),
        "bool_masked_pos": (torch.rand(b, patches, generator=g) < 0.4).to(device),
        "mim_labels": torch.randint(
            0, config.image_config.vocab_size, (b, patches), generator=g
        ).to(device),
        "itm_labels": (torch.arange(b) % 2).to(device),  # FLAVA's ITM rows: half negatives
    }
    return Pair(
        "flava",
        make_side(
            "FLAVARS full objective",
            zoo,
            lambda: zoo.training_step(batch, 0),
            device,
            bf16,
        ),
        make_side(
            "FlavaForPreTraining",
            hf,
            lambda: hf(**hf_inputs, return_loss=True).loss,
            device,
            bf16,
            compile_,
        ),
        b,
        t,
        unmatched=(
            "zoo adds unimodal MIM + MLM (FLAVA skips them beside a multimodal pass) and "
            "location; MIM / MMM image: pixel targets vs FLAVA's 8192-way codebook head"
        ),
    )


def clip_pair(
    d: dict[str, Any], folder: Path, device: torch.device, bf16: bool, compile_: bool
) -> Pair:
    from transformers import CLIPConfig, CLIPModel

    tokenizer = text_tokenizer()
    zoo = _flavars(d, tokenizer, folder, contrastive_only=True)
    if compile_:
        compile_blocks(zoo)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": d["text_width"],
            "num_hidden_layers": d["text_depth"],
            "num_attention_heads": d["text_heads"],
            "intermediate_size": 4 * d["text_width"],
            "max_position_embeddings": max(d["text_tokens"], 16),
            "eos_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": d["vit_width"],
            "num_hidden_layers": d["vit_depth"],
            "num_attention_heads": d["vit_heads"],
            "intermediate_size": d["vit_mlp"],
            "image_size": d["image"],
            "patch_size": d["patch"],
        },
        projection_dim=d["embed"],
    )
    hf = CLIPModel._from_config(config, attn_implementation="sdpa")
    batch = caption_batch(tokenizer, d["batch"], d["text_tokens"], d["image"], device)
    hf_inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "pixel_values": batch["image"],
    }
    return Pair(
        "clip",
        make_side("FLAVARS contrastive", zoo, lambda: zoo.training_step(batch, 0), device, bf16),
        make_side(
            "CLIPModel", hf, lambda: hf(**hf_inputs, return_loss=True).loss, device, bf16, compile_
        ),
        d["batch"],
        d["text_tokens"],
        unmatched="text: BERT (bidirectional) vs CLIP's causal text tower",
    )


# ---------------------------------------------------------------------- generators vs LLaVA
def llava_folder(d: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """A random LlavaForConditionalGeneration (transformers' layout, with the tokenizer and the
    image processor) and its Llama alone as a causal LM, saved under ``folder`` once."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlamaForCausalLM,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    path, llm_path = folder / "llava", folder / "llava-llm"
    if path.is_dir():
        return path, llm_path
    tokenizer = text_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=d["vit_width"],
        intermediate_size=d["vit_mlp"],
        num_hidden_layers=d["vit_depth"],
        num_attention_heads=d["vit_heads"],
        image_size=d["image"],
        patch_size=d["patch"],
    )
    text = LlamaConfig(
        vocab_size=d["vocab"] or len(tokenizer),
        hidden_size=d["llm_width"],
        intermediate_size=d["llm_mlp"],
        num_hidden_layers=d["llm_depth"],
        num_attention_heads=d["llm_heads"],
        num_key_value_heads=d["llm_kv_heads"],
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "CLIPImageProcessor",
                "crop_size": {"height": d["image"], "width": d["image"]},
                "size": {"shortest_edge": d["image"]},
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
            }
        )
    )
    llm = LlamaForCausalLM(text)
    llm.model, llm.lm_head = model.model.language_model, model.lm_head
    llm.save_pretrained(llm_path)
    tokenizer.save_pretrained(llm_path)
    return path, llm_path


def conversation_batch(
    tokenizer, d: dict[str, Any], visual: int, device: torch.device, image: int | None = None
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The zoo's batch (one ``<image>`` token at position 1, answers in the second half, one
    referring target per image whose segmentation phrase sits in the answer) and
    transformers' LLaVA inputs for it (``<image>`` repeated once per visual token)."""
    b, t, size = d["batch"], d["text_tokens"], image or d["image"]
    g = torch.Generator().manual_seed(0)
    ids = _words(tokenizer, (b, t), g)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    ids[:, 1] = image_id
    seg = torch.tensor(
        tokenizer.convert_tokens_to_ids([f"[SEG{s}_{i}]" for s in range(2) for i in range(3)])
    )
    start = t // 2 + 1
    ids[:, start : start + len(seg)] = seg
    labels = torch.where(torch.arange(t) >= t // 2, ids, -100)
    pixels = torch.randn(b, 3, size, size, generator=g)
    zoo = {
        "image": pixels,
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "mask": (torch.rand(b, 1, size, size, generator=g) > 0.7).float(),
        "mask_valid": torch.ones(b, 1, dtype=torch.bool),
        "category": torch.zeros(b, 1, dtype=torch.long),
        "target_index": torch.arange(b),
        "target_positions": (start + torch.arange(len(seg))).expand(b, -1).clone(),
    }
    expand = torch.full((b, visual), image_id)
    hf_ids = torch.cat([ids[:, :1], expand, ids[:, 2:]], dim=1)
    hf_labels = torch.cat([labels[:, :1], torch.full_like(expand, -100), labels[:, 2:]], dim=1)
    hf = {"input_ids": hf_ids, "attention_mask": torch.ones_like(hf_ids), "labels": hf_labels}
    if image is None:
        hf["pixel_values"] = pixels
    else:
        hf["pixel_values"] = torch.randn(b, 3, d["image"], d["image"], generator=g)
    return ({k: v.to(device) for k, v in zoo.items()}, {k: v.to(device) for k, v in hf.items()})


def generator_model(
    name: str, d: dict[str, Any], folder: Path, compile_: bool = False
) -> tuple[Any, str, str, int | None]:
    """The zoo's generator of pair ``name`` at the LLaVA dimensions ``d`` (the training pairs
    and ``bench/inference.py`` build it here), every part trainable.

    Args:
        name: ``llava``, ``fuse``, ``aquila``, ``geopix`` or ``geopix_no_memory`` (GeoPix with
            ``memory.enabled: false``: what its class-wise memory costs).
        d: the scale's ``llava`` dimensions.
        folder: where the random LLaVA is saved (:func:`llava_folder`).
        compile_: the family's own switch, ``speed.compile`` (each LLM decoder layer and
            vision block compiled in place).

    Returns:
        (the model, its label in the tables, what is not matched with the LLaVA ("" when
        nothing), its image size when it differs from LLaVA's, else None).

    Raises:
        ValueError: an unknown name.
    """
    from transformers import AutoTokenizer

    from zoo.data.embedded import SCENE_CLASSES
    from zoo.encoders.vision import VisionSpec
    from zoo.models import FUSE, Aquila, FuseInjection, FuseViews, GeoPix, SFIConfig, TrainingStage
    from zoo.models.generator import SpeedConfig
    from zoo.models.geopix import MemoryConfig

    path, llm_path = llava_folder(d, folder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    stage = TrainingStage(**ALL_TRAINABLE)
    common = {
        "tokenizer": tokenizer,
        "stage": stage,
        "image_size": d["image"],
        "speed": SpeedConfig(compile=compile_),
    }
    image, unmatched = None, ""
    if name == "llava":
        zoo = FUSE(
            llava=str(path),
            inject=FuseInjection(layers=[]),
            views=FuseViews(multi_scale=False, global_layer=-2),
            **common,
        )
        label = "FUSE injection off"
    elif name == "fuse":
        zoo = FUSE(
            llava=str(path),
            views=FuseViews(
                global_layer=-2,
                detail_layers=d["detail_layers"],
                window_sizes=d["windows"],
                canvas_size=d["canvas"],
            ),
            inject=FuseInjection(layers=d["inject"]),
            **common,
        )
        label = "FUSE windows + injection"
    elif name == "aquila":
        image = d["aquila_image"]
        zoo = Aquila(
            vision=VisionSpec(name=d["aquila_vision"]),
            llm=str(llm_path),
            sfi=SFIConfig(
                feature_stages=d["aquila_stages"],
                grid_size=d["aquila_grid"],
                mda_layers=d["aquila_mda"],
            ),
            **(common | {"image_size": image}),
        )
        label = "Aquila SFI + MDA"
        unmatched = (
            f"vision: {d['aquila_vision']} at {image} px vs CLIP ViT {d['vit_width']}x"
            f"{d['vit_depth']} at {d['image']} px; Llama and {d['aquila_grid'] ** 2} visual tokens matched"
        )
    elif name in ("geopix", "geopix_no_memory"):
        with_memory = name == "geopix"
        zoo = GeoPix(
            llava=str(path),
            feature_layers=d["geopix_layers"],
            class_names=list(SCENE_CLASSES),
            memory=MemoryConfig(enabled=with_memory),
            **common,
        )
        label = "GeoPix" if with_memory else "GeoPix without its memory (ablation)"
        unmatched = "GeoPix adds its mask decoder and mask losses (one target per image)"
    else:
        raise ValueError(f"unknown generator pair {name!r}")
    return zoo, label, unmatched, image


def generator_pair(
    name: str, d: dict[str, Any], folder: Path, device: torch.device, bf16: bool, compile_: bool
) -> Pair:
    from transformers import LlavaForConditionalGeneration

    zoo, label, unmatched, image = generator_model(name, d, folder, compile_)
    path, _ = llava_folder(d, folder)
    hf = LlavaForConditionalGeneration.from_pretrained(path, attn_implementation="sdpa")
    visual = (d["image"] // d["patch"]) ** 2
    zoo_batch, hf_batch = conversation_batch(zoo.tokenizer, d, visual, device, image)
    return Pair(
        name,
        make_side(label, zoo, lambda: zoo.training_step(zoo_batch, 0), device, bf16),
        make_side(
            "LlavaForConditionalGeneration", hf, lambda: hf(**hf_batch).loss, device, bf16, compile_
        ),
        d["batch"],
        hf_batch["input_ids"].shape[1],
        unmatched,
    )


def build_pair(
    name: str,
    dims: dict[str, Any],
    folder: Path,
    device: torch.device,
    bf16: bool,
    compile_: bool = False,
) -> Pair:
    if name == "flava":
        return flava_pair(dims["flava"], folder, device, bf16, compile_)
    if name == "clip":
        return clip_pair(dims["clip"], folder, device, bf16, compile_)
    return generator_pair(name, dims["llava"], folder, device, bf16, compile_)
