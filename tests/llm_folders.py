"""Tiny stand-ins of real LLM folders, written to a temporary folder: a template-less
Llama-style tokenizer (SentencePiece-like BPE, ``<s>``/``</s>``/``<unk>``, no chat template:
Vicuna v1.5's situation) or a Llama-3-style one (header tokens, ``<|eot_id|>`` as EOS), with a
tiny random ``LlamaForCausalLM`` saved beside it whose embedding table matches the tokenizer.

The LLM's config names no EOS, so ``generate`` stops only on what the zoo passes it.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = ["CORPUS", "LLAMA_3_SPECIALS", "collate_one", "llm_folder", "tokenizer_core"]

#: Text the tiny BPE learns its merges from (the conversation formats' words and answers).
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: ASSISTANT: user assistant system",
    "What is in the image? Describe the scene. How many ships are there?",
    "Answer the question using a single word or phrase.",
    "a harbour with three ships near the pier. two. yes no road tree building",
] * 20
LLAMA_3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def tokenizer_core(specials: list[str], vocab_size: int = 220) -> Tokenizer:
    """A SentencePiece-like BPE (``▁`` for spaces, prefixed to the first word) over
    :data:`CORPUS`, every printable character in its alphabet (no ``<unk>`` in tests)."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = list(string.ascii_letters + string.digits + string.punctuation + "▁\n")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    core.train_from_iterator(CORPUS, trainer)
    return core


def llm_folder(
    folder: Path,
    style: str = "vicuna",
    llm_vocab: int | None = None,
    layers: int = 2,
    chat_template: str | None = None,
) -> Path:
    """Write a tokenizer (``style`` ``vicuna``: ``<s>``, ``</s>``, no template; ``llama_3``:
    Llama-3's header tokens, ``<|eot_id|>`` EOS) and a tiny random Llama into ``folder``.

    ``llm_vocab`` sizes the LLM's embedding table (default: the tokenizer's length).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if style == "vicuna":
        core = tokenizer_core(["<unk>", "<s>", "</s>"])
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
    elif style == "llama_3":
        core = tokenizer_core(["<unk>", *LLAMA_3_SPECIALS])
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=core,
            bos_token="<|begin_of_text|>",
            eos_token="<|eot_id|>",
            unk_token="<unk>",
            additional_special_tokens=LLAMA_3_SPECIALS[1:3],
        )
    else:
        raise ValueError(style)
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=llm_vocab or len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def collate_one(tokenizer, fmt: str | None, turns: list[dict], max_length: int = 512) -> dict:
    """One conversation (LLaVA's ``{"from", "value"}`` turns) through the data's real
    :class:`~zoo.data.conversations.ConversationCollate` in format ``fmt``: the training batch."""
    from zoo.data.conversations import ConversationCollate

    sample = {
        "image": torch.zeros(3, 8, 8),
        "id": "0",
        "conversations": turns,
        "task": "caption",
        "question_type": "",
    }
    return ConversationCollate(tokenizer, max_length, (), fmt)([sample])
