"""Injection of visual features inside the LLM: forward pre-hooks on chosen decoder layers.

A family that injects (Aquila's MDA, FUSE's recurrent injection) lists the decoder layers in
``inject_layers`` and implements ``inject``; the generator core owns one
:class:`InjectionHooks`, which hooks those layers and, while a pass runs, hands each hook the
visual positions and the family's context. Decoding steps (one new token, no visual tokens) pass
through untouched; under beam search the context is repeated per beam row, once per call.

The hooks run eagerly under ``torch.compile`` (``speed.compile`` compiles each decoder layer's
call, hooks included): traced, each hooked layer's index recompiled the layer and
``str(layer)`` of the then dynamic index broke its graph (FUSE: 9 graphs, 3 breaks in the
bench's step instead of 2 graphs, none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo.encoders.llm import decoder_layers
from zoo.models.decoding import repeat_rows

__all__ = ["InjectFn", "InjectionHooks"]

#: ``inject_at(layer, hidden, positions, context)``: the new hidden states of a decoder layer's
#: input (the generator core's :meth:`~zoo.models.generator.VisionLanguageGenerator.inject_at`).
InjectFn = Callable[[int, Tensor, Tensor, Any], Tensor]


class InjectionHooks:
    """The forward pre-hooks that rewrite the visual positions before chosen decoder layers.

    Args:
        inject_at: the function a hooked layer's input goes through.
    """

    def __init__(self, inject_at: InjectFn) -> None:
        self.inject_at = inject_at
        #: The installed hooks' handles.
        self.handles: list[Any] = []
        #: While a pass runs: ``positions`` (``B×N``), the family's ``context`` and the
        #: ``length`` of the full sequence; None otherwise.
        self.context: dict[str, Any] | None = None

    def install(self, llm: nn.Module, layers: Sequence[int]) -> None:
        """Hook ``layers`` of ``llm`` (replacing any hooks installed before).

        Args:
            llm: the LLM (plain or peft-wrapped).
            layers: 0-based indices of the decoder layers the injection runs before.

        Raises:
            ValueError: a layer outside the LLM.
        """
        self.remove()
        blocks = decoder_layers(llm)
        for index in layers:
            if not 0 <= index < len(blocks):
                raise ValueError(
                    f"injection layer {index} is outside the LLM's {len(blocks)} layers"
                )
            self.handles.append(
                blocks[index].register_forward_pre_hook(self._hook(index), with_kwargs=True)
            )

    def remove(self) -> None:
        """Remove every installed hook."""
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def start(self, positions: Tensor, context: Any, length: int) -> None:
        """Arm the hooks for one pass.

        Args:
            positions: the visual tokens' positions ``B×N`` in the spliced sequence.
            context: the family's context for ``inject`` (per sample).
            length: the spliced sequence's length (shorter inputs are decoding steps).
        """
        self.context = {"positions": positions, "context": context, "length": length}

    def stop(self) -> None:
        """Disarm the hooks (after the pass, also when it failed)."""
        self.context = None

    def _hook(self, index: int) -> Callable[..., tuple[tuple, dict] | None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            context = self.context
            if context is None:
                return None
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            if hidden.shape[1] < context["length"]:  # a decoding step: no visual tokens
                return None
            context = self.context_for_rows(hidden.shape[0])
            hidden = self.inject_at(index, hidden, context["positions"], context["context"])
            if "hidden_states" in kwargs:
                kwargs["hidden_states"] = hidden
            else:
                args = (hidden, *args[1:])
            return args, kwargs

        return torch.compiler.disable(hook)  # eager under torch.compile: see the module's doc

    def context_for_rows(self, rows: int) -> dict[str, Any]:
        """The armed context for ``rows`` hidden-state rows.

        ``generate`` runs each prompt as ``num_beams`` (or ``num_return_sequences``) adjacent
        rows, so positions and context are repeated per row, once per call (shapes only:
        nothing is read from the device).

        Args:
            rows: the hidden states' batch size.

        Returns:
            The context with ``rows`` rows (kept for the next layers of the same pass).

        Raises:
            ValueError: ``rows`` is not a whole number of copies of each sample.
        """
        context = self.context
        assert context is not None
        samples = context["positions"].shape[0]
        if rows == samples:
            return context
        if rows % samples:
            raise ValueError(
                f"the LLM runs {rows} rows but the injection context holds {samples} samples: "
                "rows must be a whole number of copies of each sample (beams, return sequences)"
            )
        repeats = rows // samples
        self.context = {
            **context,
            "positions": context["positions"].repeat_interleave(repeats, dim=0),
            "context": repeat_rows(context["context"], repeats),
        }
        return self.context
