"""Tokenizers owned by the data: a Hugging Face tokenizer by name, or a word-level one.

The embedded dataset's text comes from a closed set of words, so its tokenizer is a word-level
vocabulary with BERT's special tokens and pre-tokenization (lower case, punctuation split),
built in memory: nothing to download. A real text encoder is paired with its own tokenizer by
giving the same name to the datamodule's ``tokenizer`` and the model's ``text.name``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from zoo.encoders.packaged import packaged_weights

__all__ = ["CHAT_TEMPLATE", "SPECIAL_TOKENS", "build_tokenizer", "word_level_tokenizer"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[EOS]", "<image>")
#: Words the chat template writes; added to every word-level vocabulary.
CHAT_WORDS = ("user", "assistant", "system", ":")
#: The word-level tokenizer's chat template: ``user : ... assistant : ... [EOS]`` (the zoo
#: writes its conversations with the ``word`` format, :mod:`zoo.conversation_formats`).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }}"
    "{% if m['role'] == 'assistant' %} [EOS]{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


def word_level_tokenizer(vocabulary: Sequence[str]) -> PreTrainedTokenizerFast:
    """A BERT-style ``[CLS] words [SEP]`` tokenizer over a fixed word list.

    With a chat template, an ``[EOS]`` token and the ``<image>`` placeholder for the generators.

    Args:
        vocabulary: the words (the chat template's words and the special tokens are added).

    Returns:
        The tokenizer.
    """
    words = [w for w in dict.fromkeys([*vocabulary, *CHAT_WORDS]) if w not in SPECIAL_TOKENS]
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        eos_token="[EOS]",
        additional_special_tokens=["<image>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tokenizer(
    name: str | None,
    vocabulary: Sequence[str] | None = None,
    chat: bool = False,
    gguf_file: str | None = None,
) -> PreTrainedTokenizerBase:
    """Build the data's tokenizer: word level, packaged, Hugging Face or local.

    ``name`` None -> word level over ``vocabulary``; else a packaged model's (``minilm``,
    ``smollm2``), a Hugging Face id's or a local folder's tokenizer.

    Args:
        name: the tokenizer (None: word level).
        vocabulary: the words of the word-level tokenizer.
        chat: a generator's tokenizer: a pad token (the EOS token when missing) and the
            ``<image>`` placeholder token are added. Its chat template is left as it is (none is
            invented: the conversation format, :mod:`zoo.conversation_formats`, says how a
            conversation is written).
        gguf_file: a GGUF file in the repository to read the tokenizer from.

    Returns:
        The tokenizer.

    Raises:
        ValueError: word level without a vocabulary, or a non-chat tokenizer without a mask or
            pad token (masked language modelling needs both).
        RuntimeError: the tokenizer cannot be loaded (e.g. offline).
    """
    if name is None:
        if not vocabulary:
            raise ValueError("a word-level tokenizer needs a vocabulary; or set tokenizer: <hf id>")
        return word_level_tokenizer(vocabulary)
    packaged = packaged_weights(name)
    try:
        if packaged is not None:
            tokenizer = AutoTokenizer.from_pretrained(packaged[0], gguf_file=packaged[1])
        else:
            kwargs = {"gguf_file": gguf_file} if gguf_file else {}
            tokenizer = AutoTokenizer.from_pretrained(name, **kwargs)
    except OSError as error:
        raise RuntimeError(
            f"could not load tokenizer {name!r} ({error}); this machine may be offline: give a "
            "local folder with the tokenizer files, or leave tokenizer unset for the embedded data"
        ) from error
    if chat:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if "<image>" not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    elif tokenizer.mask_token is None or tokenizer.pad_token is None:
        raise ValueError(
            f"tokenizer {name!r} has no mask or pad token; masked language modelling needs both"
        )
    return tokenizer
