"""Tokenizers owned by the data: a Hugging Face tokenizer by name, or a word-level one.

The embedded dataset's text comes from a closed set of words, so its tokenizer is a word-level
vocabulary with BERT's special tokens and pre-tokenisation (lower case, punctuation split),
built in memory: nothing to download. A real text encoder is paired with its own tokenizer by
giving the same name to the datamodule's ``tokenizer`` and the model's ``text_encoder``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

__all__ = ["SPECIAL_TOKENS", "build_tokenizer", "word_level_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def word_level_tokenizer(vocabulary: Sequence[str]) -> PreTrainedTokenizerFast:
    """A BERT-style ``[CLS] words [SEP]`` tokenizer over a fixed word list."""
    words = [w for w in dict.fromkeys(vocabulary) if w not in SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_tokenizer(
    name: str | None, vocabulary: Sequence[str] | None = None
) -> PreTrainedTokenizerBase:
    """``name`` None -> word level over ``vocabulary``; else a Hugging Face id or local folder."""
    if name is None:
        if not vocabulary:
            raise ValueError("a word-level tokenizer needs a vocabulary; or set tokenizer: <hf id>")
        return word_level_tokenizer(vocabulary)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as error:
        raise RuntimeError(
            f"could not load tokenizer {name!r} ({error}); this machine may be offline: give a "
            "local folder with the tokenizer files, or leave tokenizer unset for the embedded data"
        ) from error
    if tokenizer.mask_token is None or tokenizer.pad_token is None:
        raise ValueError(
            f"tokenizer {name!r} has no mask or pad token; masked language modelling needs both"
        )
    return tokenizer
