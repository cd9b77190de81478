"""Causal language models by Hugging Face id, local folder or GGUF file; a tiny random Llama
by default so nothing is downloaded.

:class:`LLMSpec` is the one specification of a generator's LLM: the model builds the LLM from
it and the data its tokenizer and conversation format (the zoo CLI links ``model.init_args.llm``
to ``data.init_args.llm``), so a config names the LLM once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from zoo.encoders.packaged import packaged_weights
from zoo.encoders.sources import (
    build_hf_model,
    building_architecture_only,
    hf_source,
    mark_source,
    stored_source,
)

__all__ = [
    "TINY_LLMS",
    "LLMSpec",
    "build_llm",
    "check_vocabulary",
    "decoder_layers",
    "fit_vocabulary",
]

#: Small random Llama-style configurations usable offline by name.
TINY_LLMS: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
    },
}


#: The weight dtypes ``llm.dtype`` takes (None: float32).
LLM_DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class LLMSpec:
    """A generator's LLM, its tokenizer and its conversation format, written once.

    In a YAML, ``llm: tiny`` (a name alone) or ``llm: {name: lmsys/vicuna-7b-v1.5,
    conversation: vicuna_v1, dtype: bfloat16}``. The model builds the LLM from it; the data
    (linked by the zoo CLI) builds the tokenizer and writes its conversations in the format.

    Attributes:
        name: ``tiny``/``small`` (random Llama sized to the tokenizer), ``smollm2`` (the packaged
            SmolLM2-135M-Instruct), a Hugging Face id or a local folder.
        conversation: ``plain``, ``vicuna_v1``, ``llama_3``, ``template`` or ``word``
            (:mod:`zoo.conversation_formats`); None: ``vicuna_v1`` with ``llava``, ``word``
            for the word-level tokenizer, ``template`` for a tokenizer with a chat template
            (an error for one without).
        tokenizer: where the tokenizer is, when not beside the LLM (a Hugging Face id or a
            folder); None: the LLM's own, or for ``tiny``/``small`` a word-level tokenizer
            built from the data's texts (or the data's ``tokenizer:``).
        dtype: ``bfloat16``, ``float16`` or ``float32`` for the LLM's weights (None: float32).
        pretrained: load the named weights (else the named config with random weights).
        gguf_file: a GGUF weight file inside ``name``.
    """

    name: str = "tiny"
    conversation: str | None = None
    tokenizer: str | None = None
    dtype: str | None = None
    pretrained: bool = True
    gguf_file: str | None = None

    def __post_init__(self) -> None:
        # ``--model.init_args.llm.dtype=null`` reaches a union-typed field as the text "None"
        # (jsonargparse tries ``str`` of ``LLMSpec | str``): read it as the null it was.
        for key in ("conversation", "tokenizer", "dtype", "gguf_file"):
            if getattr(self, key) in ("None", "null", ""):
                setattr(self, key, None)
        if self.dtype is not None and self.dtype not in LLM_DTYPES:
            raise ValueError(
                f"llm.dtype {self.dtype!r} is not one of {list(LLM_DTYPES)} (or null for float32)"
            )

    @classmethod
    def of(cls, value: LLMSpec | str | dict[str, Any] | Any) -> LLMSpec:
        """A spec from a spec, a name, a dict or a parsed namespace.

        Args:
            value: the spec, its ``name`` alone, its fields as a dict or namespace, or None (the
                default).

        Returns:
            The spec.

        Raises:
            ValueError: a key that is not a field.
        """
        if isinstance(value, LLMSpec):
            return value
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(name=value)
        value = getattr(value, "init_args", value)  # a parsed namespace in subclass mode
        items = dict(value) if isinstance(value, dict) else dict(vars(value))
        items = {k: v for k, v in items.items() if not k.startswith("__")}
        unknown = sorted(set(items) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"llm: unknown keys {unknown}; the keys are {list(cls.__dataclass_fields__)}"
            )
        return cls(**items)

    @staticmethod
    def upgrade(hparams: dict[str, Any]) -> dict[str, Any]:
        """A generator's hyper-parameters saved before the spec (``llm`` a name, with
        ``llm_pretrained``, ``gguf_file`` and ``llm_dtype`` beside it) in the spec's keys.

        Args:
            hparams: a checkpoint's hyper-parameters.

        Returns:
            A copy with the old keys in one ``llm`` group (unchanged when there are none).
        """
        old = {"llm_pretrained": "pretrained", "gguf_file": "gguf_file", "llm_dtype": "dtype"}
        if not any(k in hparams for k in old) and not isinstance(hparams.get("llm"), str):
            return dict(hparams)
        out = {k: v for k, v in hparams.items() if k not in old}
        spec = (
            {"name": out["llm"]} if isinstance(out.get("llm"), str) else dict(out.get("llm") or {})
        )
        out["llm"] = spec | {new: hparams[key] for key, new in old.items() if key in hparams}
        return out

    @property
    def random(self) -> bool:
        """A random tiny Llama sized to whatever tokenizer the data has."""
        return self.name in TINY_LLMS

    def tokenizer_source(self) -> str | None:
        """Where the tokenizer comes from.

        Returns:
            The tokenizer's id or folder; None: the data builds a word-level one.
        """
        if self.tokenizer is not None:
            return self.tokenizer
        return None if self.random else self.name


def check_vocabulary(
    model: PreTrainedModel, tokenizer: Any, llm: str, added: Iterable[str] = ()
) -> None:
    """Raise when ``tokenizer`` does not belong to ``model``.

    Args:
        model: the LLM.
        tokenizer: the data's tokenizer.
        llm: the LLM's name (in the errors).
        added: the tokens the zoo adds (``<image>``, segmentation tokens), allowed beyond the
            embedding table.

    Raises:
        ValueError: a token id beyond the LLM's embedding table that is not one the zoo adds,
            or an EOS / pad / BOS id outside the table.
    """
    table = model.get_input_embeddings().num_embeddings
    zoo_tokens = set(added)
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    for role in ("eos", "pad", "bos"):
        token_id = getattr(tokenizer, f"{role}_token_id", None)
        if (
            token_id is not None
            and token_id >= table
            and getattr(tokenizer, f"{role}_token") not in zoo_tokens
        ):
            raise ValueError(
                f"tokenizer {name!r}: its {role} id {token_id} is outside the {table}-row embedding "
                f"table of LLM {llm!r}; they do not belong together (set llm.tokenizer to the "
                "LLM's own tokenizer, or leave it unset)"
            )
    beyond = sorted(
        t for t, i in tokenizer.get_vocab().items() if i >= table and t not in zoo_tokens
    )
    if beyond:
        raise ValueError(
            f"tokenizer {name!r} has {len(tokenizer)} tokens but LLM {llm!r} embeds {table} and the "
            f"zoo adds only {sorted(zoo_tokens)}: {len(beyond)} more ({beyond[:5]} ...) would get "
            "new random rows. Use the LLM's own tokenizer (llm.tokenizer unset, data.tokenizer "
            "unset) or the LLM that goes with this tokenizer"
        )


def build_llm(
    name: str = "tiny",
    vocab_size: int | None = None,
    pretrained: bool = True,
    gguf_file: str | None = None,
    dtype: str | None = None,
    check: Callable[[PreTrainedModel], None] | None = None,
) -> PreTrainedModel:
    """A causal LM with SDPA attention whose embedding table holds ``vocab_size`` tokens.

    Args:
        name: ``tiny``/``small`` (random Llama), ``smollm2`` (the packaged SmolLM2-135M-Instruct),
            a Hugging Face id or a local folder.
        vocab_size: the tokenizer's length; the embeddings are resized to it when larger.
        pretrained: load the named weights (else the named config with random weights).
        gguf_file: a GGUF file inside ``name`` (e.g. the packaged SmolLM2-135M-Instruct).
        dtype: ``bfloat16``, ``float16`` or ``float32`` for the weights (None: float32).
        check: called with a named LLM before its embeddings are grown (e.g.
            :func:`check_vocabulary`: the tokenizer must belong to it).

    Returns:
        The LLM.
    """
    torch_dtype = getattr(torch, dtype) if dtype else None
    if name in TINY_LLMS:
        if vocab_size is None:
            raise ValueError(f"LLM {name!r} needs vocab_size (the tokenizer's length)")
        config = LlamaConfig(
            vocab_size=vocab_size,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            attn_implementation="sdpa",
            **TINY_LLMS[name],
        )
        model = LlamaForCausalLM(config)
        return model.to(torch_dtype) if torch_dtype else model
    source = name
    if building_architecture_only():  # the checkpoint holds every weight: read no file
        entry = stored_source(source, read=lambda: _read_llm(source, gguf_file))
        model = build_hf_model(AutoModelForCausalLM, entry, torch_dtype, "sdpa")
    else:
        model = _load_llm(source, pretrained, gguf_file, torch_dtype)
        entry = hf_source(model)  # before the table grows: the architecture of the source
    mark_source(model, source, entry)  # a loaded model saved again still carries it
    if check is not None:
        check(model)
    return fit_vocabulary(model, vocab_size)


def _load_llm(
    name: str, pretrained: bool, gguf_file: str | None, torch_dtype: torch.dtype | None
) -> PreTrainedModel:
    """A named LLM (weights, or its config with random weights), with a clear error."""
    packaged = packaged_weights(name)
    if packaged is not None:
        name, gguf_file = packaged
    try:
        kwargs = {"attn_implementation": "sdpa", "dtype": torch_dtype}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        if pretrained:
            return AutoModelForCausalLM.from_pretrained(name, **kwargs)
        config = AutoConfig.from_pretrained(name, **({"gguf_file": gguf_file} if gguf_file else {}))
        return AutoModelForCausalLM.from_config(
            config, attn_implementation="sdpa", dtype=torch_dtype
        )
    except OSError as error:
        hint = (
            f"{name} holds no Hugging Face causal LM"
            if Path(name).exists()
            else "this machine may be offline: give a local folder, or use llm: tiny"
        )
        raise RuntimeError(f"could not load LLM {name!r}: {hint}") from error


def _read_llm(name: str, gguf_file: str | None) -> dict[str, Any]:
    """The configuration of a named LLM, read from its files (no weights): for a checkpoint
    that did not store it."""
    packaged = packaged_weights(name)
    if packaged is not None:
        name, gguf_file = packaged
    config = AutoConfig.from_pretrained(name, **({"gguf_file": gguf_file} if gguf_file else {}))
    return {"config": config.to_dict()}


def fit_vocabulary(model: PreTrainedModel, vocab_size: int | None) -> PreTrainedModel:
    """Grow the embedding table (and an untied head) to ``vocab_size`` tokens when it is smaller
    (the data's added tokens: ``<image>``, segmentation tokens). New rows start at the mean of
    the others, except on the meta device (no values to average: memory planning).

    Args:
        model: the LLM.
        vocab_size: the tokens it must embed (None: unchanged).

    Returns:
        The same model.
    """
    table = model.get_input_embeddings()
    if vocab_size is not None and vocab_size > table.num_embeddings:
        model.resize_token_embeddings(vocab_size, mean_resizing=table.weight.device.type != "meta")
    return model


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder layers of a (possibly peft-wrapped) Hugging Face causal LM.

    Args:
        llm: the LLM.

    Returns:
        Its decoder layers.

    Raises:
        ValueError: none found.
    """
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    body = getattr(base, "model", base)
    for attr in ("layers", "h", "decoder.layers"):
        module = body
        for part in attr.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the decoder layers of {type(base).__name__}")
