"""Causal language models by Hugging Face id, local folder or GGUF file; a tiny random Llama
by default so nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedModel

from zoo.encoders.packaged import packaged_weights

__all__ = ["TINY_LLMS", "build_llm", "decoder_layers"]

#: Small random Llama-style configurations usable offline by name.
TINY_LLMS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2},
    "small": {"hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 4},
}


def build_llm(
    name: str = "tiny",
    vocab_size: int | None = None,
    pretrained: bool = True,
    gguf_file: str | None = None,
    dtype: str | None = None,
) -> PreTrainedModel:
    """A causal LM with SDPA attention whose embedding table holds ``vocab_size`` tokens.

    Args:
        name: ``tiny``/``small`` (random Llama), ``smollm2`` (the packaged SmolLM2-135M-Instruct),
            a Hugging Face id or a local folder.
        vocab_size: the tokenizer's length; the embeddings are resized to it when larger.
        pretrained: load the named weights (else the named config with random weights).
        gguf_file: a GGUF file inside ``name`` (e.g. the packaged SmolLM2-135M-Instruct).
        dtype: ``bfloat16``, ``float16`` or ``float32`` for the weights (None: float32).
    """
    torch_dtype = getattr(torch, dtype) if dtype else None
    packaged = packaged_weights(name)
    if packaged is not None:
        name, gguf_file = packaged
    if name in TINY_LLMS:
        if vocab_size is None:
            raise ValueError(f"LLM {name!r} needs vocab_size (the tokenizer's length)")
        config = LlamaConfig(
            vocab_size=vocab_size, max_position_embeddings=2048, tie_word_embeddings=True,
            attn_implementation="sdpa", **TINY_LLMS[name],
        )
        model = LlamaForCausalLM(config)
        return model.to(torch_dtype) if torch_dtype else model
    try:
        kwargs = {"attn_implementation": "sdpa", "dtype": torch_dtype}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        if pretrained:
            model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        else:
            from transformers import AutoConfig

            model = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(name), attn_implementation="sdpa", dtype=torch_dtype
            )
    except OSError as error:
        hint = (
            f"{name} holds no Hugging Face causal LM" if Path(name).exists()
            else "this machine may be offline: give a local folder, or use llm: tiny"
        )
        raise RuntimeError(f"could not load LLM {name!r}: {hint}") from error
    if vocab_size is not None and vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(vocab_size)
    return model


def decoder_layers(llm: nn.Module) -> nn.ModuleList:
    """The decoder layers of a (possibly peft-wrapped) Hugging Face causal LM."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    body = getattr(base, "model", base)
    for attr in ("layers", "h", "decoder.layers"):
        module = body
        for part in attr.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(f"cannot find the decoder layers of {type(base).__name__}")
