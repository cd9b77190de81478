"""The switches for training at scale: activation checkpointing keeps the gradients (MDA,
LoRA and the vision tower alike), torch.compile keeps the outputs, and every attention
runs through scaled_dot_product_attention (LLM, SFI / MDA, injection, mask decoder, ViT)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from tests.models.conftest import prepared
from zoo.data.coco_refs import EmbeddedReferringDataModule
from zoo.data.datamodules import EmbeddedSplits
from zoo.encoders.llm import build_llm
from zoo.models import (
    FUSE,
    Aquila,
    FuseInjection,
    GeoPix,
    MemoryConfig,
    SFIConfig,
    SpeedConfig,
    TrainingStage,
)


def _perturbed(model):
    """Zero-initialized parameters (LoRA B, injection scales) given values, so every path
    carries gradient."""
    torch.manual_seed(1)
    for p in model.parameters():
        if p.requires_grad and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    return model


def _aquila(dm, **kwargs) -> Aquila:
    torch.manual_seed(0)
    stage = TrainingStage(train_vision=True, lora_rank=4, lora_dropout=0.0)
    return _perturbed(
        Aquila(
            tokenizer=dm.tokenizer,
            class_names=dm.class_names,
            sfi=SFIConfig(mda_layers=[0, 2]),
            stage=stage,
            **kwargs,
        )
    ).train()


def _grads(model, batch) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of the trainable parameters, and how often the first decoder layer's
    attention ran (twice when the backward pass recomputes it)."""
    runs = []
    attention = model.llm.get_base_model().model.layers[0].self_attn
    handle = attention.register_forward_hook(lambda *_: runs.append(1))
    loss = model(batch["image"], batch["input_ids"], batch["attention_mask"], batch["labels"]).loss
    loss.backward()
    handle.remove()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return grads, len(runs)


def test_activation_checkpointing_keeps_the_gradients(dm, batch):
    plain, plain_runs = _grads(_aquila(dm), batch)
    model = _aquila(dm, speed=SpeedConfig(activation_checkpointing=True))
    assert model.vision.grad_checkpointing
    assert all(layer.gradient_checkpointing for layer in model.llm.get_base_model().model.layers)
    checkpointed, runs = _grads(model, batch)
    assert (plain_runs, runs) == (1, 2)  # recomputed in the backward pass
    assert set(checkpointed) == set(plain)
    for name, grad in plain.items():  # MDA (hooks outside the checkpoint), LoRA, vision alike
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert any(n.startswith("vision.") for n in plain) and any("lora_B" in n for n in plain)
    assert any(n.startswith("mda.") for n in plain)


@pytest.mark.slow  # the compilation takes a while on a shared CPU
def test_compile_switch_keeps_outputs_and_gradients(dm, batch):
    def fuse(**kwargs) -> FUSE:
        torch.manual_seed(0)
        return _perturbed(
            FUSE(
                tokenizer=dm.tokenizer,
                class_names=dm.class_names,
                stage=TrainingStage(train_llm=True),
                **kwargs,
            )
        ).train()

    eager, compiled = fuse(), fuse(speed=SpeedConfig(compile=True))
    assert compiled.llm.model.layers[0]._compiled_call_impl is not None
    args = (
        batch["image"][:2],
        batch["input_ids"][:2],
        batch["attention_mask"][:2],
        batch["labels"][:2],
    )
    want, got = eager(*args), compiled(*args)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=1e-4)
    want.loss.backward()
    got.loss.backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


class _Calls(TorchFunctionMode):
    """Counts scaled_dot_product_attention calls and softmaxes over 4-D (attention) scores."""

    def __init__(self) -> None:
        super().__init__()
        self.sdpa = 0
        self.score_softmax = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.sdpa += 1
        elif getattr(func, "__name__", "") in ("softmax", "_softmax") and args[0].ndim >= 4:
            self.score_softmax.append(tuple(args[0].shape))
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> EmbeddedReferringDataModule:
    root = str(tmp_path_factory.mktemp("refs"))
    return prepared(EmbeddedReferringDataModule(root, splits=EmbeddedSplits(8, 4, 4), batch_size=2))


@pytest.mark.parametrize("family", ["aquila", "aquila-mda", "fuse-xattn", "geopix"])
def test_every_attention_is_sdpa(dm, batch, refs, family):
    torch.manual_seed(0)
    if family == "geopix":
        model = GeoPix(
            tokenizer=refs.tokenizer, class_names=refs.class_names, memory=MemoryConfig(capacity=4)
        ).eval()
        data = refs.on_after_batch_transfer(next(iter(refs.val_dataloader())), 0)
        attentions = len(model.llm.model.layers) + 1  # + the mask decoder (at least)

        def run():
            return model.forward_with_masks(
                data, data["input_ids"], data["attention_mask"], None, None
            )  # noqa: E731
    else:
        if family.startswith("aquila"):
            model = Aquila(
                tokenizer=dm.tokenizer,
                class_names=dm.class_names,
                sfi=SFIConfig(mda_layers=[0, 2] if family == "aquila-mda" else []),
            ).eval()
        else:
            model = FUSE(
                tokenizer=dm.tokenizer,
                class_names=dm.class_names,
                inject=FuseInjection(kind="xattn"),
            ).eval()
        attentions = len(model.llm.model.layers) + 1 + len(model.inject_layers)  # + SFI / ViT
        run = lambda: model(batch["image"], batch["input_ids"], batch["attention_mask"])  # noqa: E731
    assert model.llm.config._attn_implementation == "sdpa"
    with torch.no_grad(), _Calls() as calls:
        run()
    assert calls.sdpa >= attentions
    assert not calls.score_softmax, (
        f"attention computed by hand: softmax over {calls.score_softmax}"
    )


def test_llm_from_a_config_folder_uses_sdpa(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        vocab_size=64,
    ).save_pretrained(tmp_path)
    llm = build_llm(str(tmp_path), vocab_size=64, pretrained=False, dtype="bfloat16")
    assert llm.config._attn_implementation == "sdpa" and llm.dtype == torch.bfloat16
