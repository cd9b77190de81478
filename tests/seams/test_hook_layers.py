"""Seam: the generator core's injection hooks and the families' injection modules (FUSE's
recurrent injection, Aquila's MDA).

The convention (docs/architecture.md, "Injection hooks"): ``inject_layers`` / ``mda_layers`` are
0-based indices into the LLM's decoder layers, and the injection runs *before* the named layer.
So the hidden state entering decoder layer ``i`` equals the one leaving layer ``i - 1`` (the
spliced input embeddings for ``i = 0``) everywhere except, for a configured ``i``, at the visual
positions, where it is that layer's own module applied to them. These tests record what every
decoder layer receives and returns (hooks registered after the model's, so they see what the
layer really gets) and check exactly that, with the visual positions found from the token ids
here, not by the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from zoo.encoders.llm import decoder_layers
from zoo.models import FUSE, Aquila, FuseInjection, SFIConfig
from zoo.models.generator import VisionLanguageGenerator


def _perturbed(model: VisionLanguageGenerator, modules: nn.Module) -> VisionLanguageGenerator:
    """``model`` with the injection modules' parameters randomized (FUSE's injection starts as
    the identity, so an untouched one changes nothing wherever it sits)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in modules.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5 + 0.1)
    return model


def _record_layers(
    model: VisionLanguageGenerator, batch: dict
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """(input embeddings, the hidden state entering each decoder layer, the one leaving it)."""
    layers = decoder_layers(model.llm)
    entered: list[Any] = [None] * len(layers)
    left: list[Any] = [None] * len(layers)
    embeds: list[Tensor] = []

    def pre(index: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            entered[index] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

        return hook

    def post(index: int):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            left[index] = output[0] if isinstance(output, tuple) else output

        return hook

    base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    handles = [
        base.model.register_forward_pre_hook(
            lambda m, a, kw: embeds.append(kw["inputs_embeds"]), with_kwargs=True
        )
    ]
    for i, layer in enumerate(layers):  # after the model's own hooks: what the layer receives
        handles.append(layer.register_forward_pre_hook(pre(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(post(i)))
    try:
        with torch.no_grad():
            model(batch["image"], batch["input_ids"], batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    return embeds[0], entered, left


def _visual_positions(model: VisionLanguageGenerator, batch: dict, n: int) -> Tensor:
    """``B×N`` positions of the visual tokens in the spliced sequence: the ``<image>`` token's
    index in ``input_ids`` and the ``N - 1`` after it (found here, one sample at a time)."""
    rows = []
    for ids in batch["input_ids"]:
        (where,) = (ids == model.image_token_id).nonzero(as_tuple=True)
        assert len(where) == 1
        rows.append(torch.arange(int(where[0]), int(where[0]) + n))
    return torch.stack(rows)


def _check_hooks(
    model: VisionLanguageGenerator,
    batch: dict,
    configured: list[int],
    expected: Callable[[int, Tensor], Tensor],
) -> None:
    """``expected(i, visual hidden states)``: what the family's docstring says layer ``i``'s
    injection gives, from its own module and the context computed by the test."""
    with torch.no_grad():
        visual = model.visual_tokens(batch["image"])[0]
    positions = _visual_positions(model, batch, visual.shape[1])
    embeds, entered, left = _record_layers(model, batch)
    b, t, _ = embeds.shape
    is_visual = torch.zeros(b, t, dtype=torch.bool)
    is_visual.scatter_(1, positions, True)
    index = positions.unsqueeze(-1).expand(-1, -1, embeds.shape[-1])
    for i in range(len(entered)):
        before = embeds if i == 0 else left[i - 1]
        changed = (entered[i] != before).any(-1)  # B×T: positions this seam wrote
        if i not in configured:
            assert not changed.any(), f"decoder layer {i} (not configured) received a changed state"
            continue
        assert torch.equal(changed, is_visual), (
            f"decoder layer {i}: the injection changed positions other than exactly the visual ones"
        )
        with torch.no_grad():
            want = expected(i, before.gather(1, index))
        got = entered[i].gather(1, index)
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-5, atol=1e-5)


def _fuse_expected(model: FUSE, batch: dict) -> Callable[[int, Tensor], Tensor]:
    """FUSE's layer ``i``: ``injection[str(i)]`` over the detail stacks (windows × depths, in
    :meth:`~zoo.layers.windows.SlidingWindowFeatures.stitch`'s order) through the shared
    projector."""
    with torch.no_grad():
        details = model.projector(model.detail_stacks(batch["image"]))
    return lambda i, hidden: model.injection[str(i)](hidden, details)


@pytest.mark.parametrize("layers", [[0, 2], [1, 3]])
def test_fuse_injection_runs_before_exactly_the_configured_layers(
    conversation_dm, conversation_batch, layers
):
    """FUSE ``inject_layers: [i, ...]``: the state entering layer ``i`` is layer ``i - 1``'s output
    with its visual positions replaced by ``injection[str(i)]`` of them; every other layer gets
    the previous layer's output unchanged."""
    torch.manual_seed(0)
    model = FUSE(
        tokenizer=conversation_dm.tokenizer,
        class_names=conversation_dm.class_names,
        inject=FuseInjection(layers=layers),
    ).eval()
    _perturbed(model, model.injection)
    _check_hooks(model, conversation_batch, layers, _fuse_expected(model, conversation_batch))


@pytest.mark.parametrize("layers", [[0, 3], [1, 2]])
def test_aquila_mda_runs_before_exactly_the_configured_layers(
    conversation_dm, conversation_batch, layers
):
    """Aquila ``mda_layers: [i, ...]``: the same contract for MDA (``mda[str(i)]``, SFI with the
    visual hidden states as queries over the projected stage maps)."""
    torch.manual_seed(0)
    model = Aquila(
        tokenizer=conversation_dm.tokenizer,
        class_names=conversation_dm.class_names,
        sfi=SFIConfig(mda_layers=layers),
    ).eval()
    _perturbed(model, model.mda)
    with torch.no_grad():
        context = model.multiscale_features(conversation_batch["image"])
    _check_hooks(
        model, conversation_batch, layers, lambda i, hidden: model.mda[str(i)](context, hidden)
    )


def test_each_layers_module_is_its_own(conversation_dm, conversation_batch):
    """Two injection layers with different modules: layer ``i``'s hook must call
    ``injection[str(i)]`` (swapping them, or calling one for both, changes what layer 2 gets)."""
    torch.manual_seed(0)
    model = FUSE(
        tokenizer=conversation_dm.tokenizer,
        class_names=conversation_dm.class_names,
        inject=FuseInjection(layers=[1, 2]),
    ).eval()
    _perturbed(model, model.injection)
    with torch.no_grad():  # layer 2's module: a different gate
        for p in model.injection["2"].parameters():
            p.mul_(-1.5)
    _check_hooks(model, conversation_batch, [1, 2], _fuse_expected(model, conversation_batch))
