"""Decoding settings of the generators and the per-beam expansion of the injection context.

Every family decodes through :meth:`~zoo.models.generator.VisionLanguageGenerator.generate_ids`
(Hugging Face's ``generate`` with the KV cache); :class:`GenerationConfig` is its ``generation:``
block. ``generate`` runs each prompt as ``max(num_beams, num_return_sequences)`` adjacent rows,
so the injection hooks repeat the visual positions and context per row with
:func:`repeat_rows` (as Hugging Face repeats its inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = ["GenerationConfig", "repeat_rows"]


@dataclass
class GenerationConfig:
    """Decoding with the KV cache: greedy by default, sampling when ``do_sample``, beam search
    when ``num_beams > 1`` (beam sampling with both), as Hugging Face's ``generate`` runs them.

    Attributes:
        max_new_tokens: tokens generated after the prompt.
        do_sample: sample (else the highest score).
        temperature: divides the logits when sampling.
        top_k: sample among the ``k`` most likely tokens (0: all).
        top_p: sample within the smallest set of tokens whose probability reaches ``top_p``.
        num_beams: beams per prompt (1: no beam search).
        num_return_sequences: answers kept per prompt (at most ``num_beams`` with beams); the
            first (the best beam) is the one evaluation scores.
        length_penalty: a finished beam's score is its log-probability over ``length ** penalty``.
    """

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    num_beams: int = 1
    num_return_sequences: int = 1
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.num_beams < 1 or self.num_return_sequences < 1:
            raise ValueError(
                f"generation: num_beams ({self.num_beams}) and num_return_sequences "
                f"({self.num_return_sequences}) must be at least 1"
            )
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise ValueError(
                f"generation: num_return_sequences={self.num_return_sequences} exceeds "
                f"num_beams={self.num_beams}; beam search returns at most its beams"
            )

    @property
    def rows_per_prompt(self) -> int:
        """How many rows each prompt becomes inside ``generate``.

        Hugging Face expands the inputs by ``max(num_beams, num_return_sequences)``, each
        prompt's rows adjacent.
        """
        return max(self.num_beams, self.num_return_sequences)

    def generate_kwargs(self) -> dict[str, Any]:
        """The arguments of Hugging Face's ``generate`` for these settings.

        Returns:
            Keyword arguments (the sampling ones None without sampling, the length penalty
            None without beams).
        """
        sample, beams = self.do_sample, self.num_beams > 1
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sample,
            "temperature": self.temperature if sample else None,
            "top_k": self.top_k if sample else None,
            "top_p": self.top_p if sample else None,
            "num_beams": self.num_beams,
            "num_return_sequences": self.num_return_sequences,
            "length_penalty": self.length_penalty if beams else None,
        }


def repeat_rows(context: Any, repeats: int) -> Any:
    """``context`` with every tensor's rows repeated, each row's copies adjacent.

    ``repeat_interleave`` on dim 0, as ``generate`` expands its inputs per beam; lists, tuples
    and dicts are walked, ``None`` stays ``None``.

    Args:
        context: an injection context (tensors, or lists, tuples and dicts of them).
        repeats: copies of each row.

    Returns:
        The context with ``B·repeats`` rows.

    Raises:
        TypeError: a context of another type.
    """
    if repeats == 1 or context is None:
        return context
    if isinstance(context, Tensor):
        return context.repeat_interleave(repeats, dim=0)
    if isinstance(context, (list, tuple)):
        return type(context)(repeat_rows(c, repeats) for c in context)
    if isinstance(context, dict):
        return {k: repeat_rows(v, repeats) for k, v in context.items()}
    raise TypeError(
        f"cannot expand an injection context of type {type(context).__name__} per beam: "
        "visual_tokens should return tensors, lists, tuples or dicts of them"
    )
