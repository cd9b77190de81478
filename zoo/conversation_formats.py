"""Conversation formats: how chat messages become the generators' token ids and labels.

One format is chosen per LLM (``llm.conversation``, :class:`~zoo.encoders.llm.LLMSpec`); the
data renders its conversations with it and the model stops generating on its end token.

* ``plain``: LLaVA's pre-training format (``conv_llava_plain``): the image placeholder, then
  the answer (a caption), nothing else: no system line, no roles, the question dropped. LLaVA
  ends it with its separator ``"\\n"``; the zoo ends it with the tokenizer's EOS so generation
  stops.
* ``vicuna_v1``: LLaVA-1.5's (``conv_vicuna_v1``, ``--version v1``): BOS, the system line
  :data:`VICUNA_V1_SYSTEM`, a space, then ``USER: <question> ASSISTANT: <answer></s>`` per turn
  (separator ``" "`` after a question, the EOS after an answer); a generation prompt ends with
  ``ASSISTANT:``.
* ``llama_3``: Llama-3-Instruct's header tokens: ``<|begin_of_text|>``, then per message
  ``<|start_header_id|>role<|end_header_id|>\\n\\n<content><|eot_id|>``; an answer ends with
  ``<|eot_id|>`` and generation stops on it and on the EOS.
* ``template``: the tokenizer's own chat template (an error if it has none); each answer must
  end with the tokenizer's EOS there.
* ``word``: the word-level format of the embedded data: ``user : <question> assistant :
  <answer> [EOS]`` (the EOS is the tokenizer's).

In every format the end of an answer is a real token id (the tokenizer's EOS, or
``<|eot_id|>``), never literal text; only the answers and their end token carry labels
(:func:`tokenize_messages`). The image placeholder stays where the data puts it (first in its
turn, followed by a new line, as LLaVA's and the FUSE authors' ``preprocess_multimodal``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from transformers import PreTrainedTokenizerBase

__all__ = [
    "FORMATS",
    "IMAGE_TOKEN",
    "LLAMA_3_TOKENS",
    "ROLES",
    "SHORT_ANSWER_PROMPT",
    "VICUNA_V1_SYSTEM",
    "ConversationFormat",
    "chat_messages",
    "default_conversation",
    "is_word_level",
    "end_token_id",
    "generation_prompt",
    "generation_prompt_text",
    "prompt_ids",
    "render",
    "resolve_conversation",
    "stop_token_ids",
    "tokenize_messages",
]

ConversationFormat = Literal["plain", "vicuna_v1", "llama_3", "template", "word"]
#: The formats, in the order the docs list them.
FORMATS: tuple[str, ...] = ("plain", "vicuna_v1", "llama_3", "template", "word")
#: LLaVA's ``conv_vicuna_v1`` system line (the one LLaVA-1.5 trains with, ``--version v1``).
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
#: The special tokens the ``llama_3`` format writes (a Llama-3 tokenizer knows them).
LLAMA_3_TOKENS = ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
#: The image placeholder of a conversation; the model replaces it by its visual tokens.
IMAGE_TOKEN = "<image>"
#: Appended to short-answer questions, as LLaVA-1.5 and the Aquila paper do.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
#: LLaVA's ``from`` values -> chat roles.
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
#: Where a conversation format is chosen, for errors.
KEY = "model.init_args.llm.conversation"

Message = dict[str, str]
Span = tuple[int, int]


def _name(tokenizer: PreTrainedTokenizerBase) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def is_word_level(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer`` is the zoo's word-level one (:func:`~zoo.data.tokenize.
    word_level_tokenizer`, marked by its ``[EOS]`` and ``[CLS]`` tokens)."""
    return tokenizer.eos_token == "[EOS]" and tokenizer.cls_token == "[CLS]"


def default_conversation(tokenizer: PreTrainedTokenizerBase, llava: bool = False) -> str:
    """The format used when none is chosen: ``vicuna_v1`` with a LLaVA-1.5 checkpoint,
    ``word`` for the zoo's word-level tokenizer, ``template`` for a tokenizer with a chat
    template; a template-less Hugging Face tokenizer (Vicuna's) is an error naming the key."""
    if llava:
        return "vicuna_v1"
    if is_word_level(tokenizer):
        return "word"
    if tokenizer.chat_template:
        return "template"
    raise ValueError(
        f"tokenizer {_name(tokenizer)!r} has no chat template, so the conversation format must be "
        f"chosen: set {KEY} to one of {list(FORMATS[:3])} (plain: LLaVA pre-training; vicuna_v1: "
        "LLaVA-1.5 and Vicuna; llama_3: Llama-3)"
    )


def resolve_conversation(
    name: str | None, tokenizer: PreTrainedTokenizerBase, llava: bool = False
) -> str:
    """``name`` checked against ``tokenizer`` (``default_conversation`` when None): the format
    exists, the tokenizer has an EOS, ``template`` a chat template, ``llama_3`` its header
    tokens."""
    fmt = default_conversation(tokenizer, llava) if name is None else name
    where = f"{KEY} {fmt!r} with tokenizer {_name(tokenizer)!r}"
    if fmt not in FORMATS:
        raise ValueError(
            f"{KEY} {fmt!r} is not a conversation format; choose one of {list(FORMATS)}"
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{where}: the tokenizer has no EOS token, so answers cannot end")
    if fmt == "template" and not tokenizer.chat_template:
        raise ValueError(
            f"{where}: the tokenizer has no chat template; choose plain, vicuna_v1 or llama_3"
        )
    if fmt == "llama_3":
        vocab = tokenizer.get_vocab()
        missing = [t for t in LLAMA_3_TOKENS[1:] if t not in vocab]
        if missing:
            raise ValueError(f"{where}: the tokenizer lacks {missing}; llama_3 needs a Llama-3 one")
    return fmt


def end_token_id(fmt: str, tokenizer: PreTrainedTokenizerBase) -> int:
    """The token that ends each answer: ``<|eot_id|>`` for ``llama_3``, else the EOS."""
    if fmt == "llama_3":
        return int(tokenizer.convert_tokens_to_ids("<|eot_id|>"))
    return int(tokenizer.eos_token_id)


def stop_token_ids(fmt: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids generation stops on: the answer's end token and the EOS."""
    return list(dict.fromkeys([end_token_id(fmt, tokenizer), int(tokenizer.eos_token_id)]))


def _bos(tokenizer: PreTrainedTokenizerBase, fallback: str = "") -> str:
    return tokenizer.bos_token or fallback


def _answer(text: str, spans: list[Span], content: str, end: str) -> str:
    """Append an answer and its end token to ``text``, recording its span."""
    spans.append((len(text), len(text) + len(content) + len(end)))
    return text + content + end


def _plain(
    tok: PreTrainedTokenizerBase, messages: Sequence[Message], prompt: bool
) -> tuple[str, list[Span]]:
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) > 2:
        raise ValueError(
            f"{KEY} 'plain' takes one question and one answer (LLaVA's caption pairs), got "
            f"{len(turns)} turns; use vicuna_v1 for multi-turn conversations"
        )
    image = "<image>" if "<image>" in turns[0]["content"] else ""
    text, spans = _bos(tok) + image, []
    if len(turns) == 2 and not prompt:
        text = _answer(text, spans, turns[1]["content"], tok.eos_token)
    return text, spans


def _vicuna_v1(
    tok: PreTrainedTokenizerBase, messages: Sequence[Message], prompt: bool
) -> tuple[str, list[Span]]:
    system = VICUNA_V1_SYSTEM
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    text, spans = _bos(tok) + system + " ", []
    for m in messages:
        if m["role"] == "user":
            text += f"USER: {m['content']} "
        else:
            text = _answer(text + "ASSISTANT: ", spans, m["content"], tok.eos_token)
    return (text + "ASSISTANT:" if prompt else text), spans


def _llama_3(
    tok: PreTrainedTokenizerBase, messages: Sequence[Message], prompt: bool
) -> tuple[str, list[Span]]:
    text, spans = _bos(tok, "<|begin_of_text|>"), []

    def header(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n"

    for m in messages:
        if m["role"] == "assistant":
            text = _answer(text + header("assistant"), spans, m["content"], "<|eot_id|>")
        else:
            text += header(m["role"]) + m["content"] + "<|eot_id|>"
    return (text + header("assistant") if prompt else text), spans


def _word(
    tok: PreTrainedTokenizerBase, messages: Sequence[Message], prompt: bool
) -> tuple[str, list[Span]]:
    text, spans = "", []
    for m in messages:
        if m["role"] == "assistant":
            text = _answer(text + "assistant : ", spans, m["content"], " " + tok.eos_token) + " "
        else:
            text += f"{m['role']} : {m['content']} "
    return (text + "assistant :" if prompt else text), spans


def _template(
    tok: PreTrainedTokenizerBase, messages: Sequence[Message], prompt: bool
) -> tuple[str, list[Span]]:
    def apply(part: Sequence[Message], generation: bool) -> str:
        return tok.apply_chat_template(list(part), tokenize=False, add_generation_prompt=generation)

    text, spans = apply(messages, prompt), []
    if prompt:
        return text, spans
    eos = tok.eos_token
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head, turn = apply(messages[:k], True), apply(messages[: k + 1], False)
        if not text.startswith(head) or not text.startswith(turn):
            raise ValueError(
                f"the chat template of {_name(tok)!r} renders a conversation's prefix differently "
                f"from the whole; {KEY}: choose plain, vicuna_v1 or llama_3"
            )
        content = text.find(m["content"], len(head), len(turn))
        end = text.find(eos, max(content, len(head)) + len(m["content"]), len(turn))
        if content < 0 or end < 0:
            raise ValueError(
                f"the chat template of {_name(tok)!r} does not end an answer with its EOS "
                f"{eos!r}, so generation would not stop; {KEY}: choose plain, vicuna_v1 or llama_3"
            )
        spans.append((len(head), end + len(eos)))
    return text, spans


_RENDER = {
    "plain": _plain,
    "vicuna_v1": _vicuna_v1,
    "llama_3": _llama_3,
    "word": _word,
    "template": _template,
}


def render(
    fmt: str, tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message], prompt: bool = False
) -> tuple[str, list[Span]]:
    """The text of ``messages`` (``{"role": "system"|"user"|"assistant", "content"}``) in
    format ``fmt``, and the character span of each answer with its end token; ``prompt`` adds
    the generation prompt (an assistant turn to be written)."""
    if fmt not in _RENDER:
        raise ValueError(
            f"{KEY} {fmt!r} is not a conversation format; choose one of {list(FORMATS)}"
        )
    return _RENDER[fmt](tokenizer, messages, prompt)


def tokenize_messages(
    fmt: str, tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels: the ids on each answer and its end
    token, -100 elsewhere.

    The text is tokenized whole (special tokens such as ``<image>``, ``</s>`` and ``<|eot_id|>``
    become their ids) and the labelled tokens are those whose characters meet an answer's span.
    Each answer must end with :func:`end_token_id`: a tokenizer for which the end token is not
    one special token is an error, not a silently unterminated answer.
    """
    text, spans = render(fmt, tokenizer, messages)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"tokenizer {_name(tokenizer)!r} is not a fast tokenizer (needs offsets)")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    offsets = np.asarray(encoded["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    first, last = offsets[:, 0], offsets[:, 1]
    labels = np.full(len(ids), -100, dtype=np.int64)
    end = end_token_id(fmt, tokenizer)
    for start, stop in spans:  # one pass per answer, the tokens compared at once
        inside = np.flatnonzero((last > start) & (first < stop) & (last > first))
        if inside.size == 0 or ids[inside[-1]] != end:
            raise ValueError(
                f"conversation {fmt!r}: an answer does not end with the end token id {end} of "
                f"tokenizer {_name(tokenizer)!r} (is its EOS a special token?)"
            )
        labels[inside] = ids[inside]
    return ids.tolist(), labels.tolist()


def prompt_ids(
    fmt: str, tokenizer: PreTrainedTokenizerBase, messages: Sequence[Message]
) -> list[int]:
    """Token ids of ``messages`` (the questions so far) followed by the generation prompt."""
    text, _ = render(fmt, tokenizer, messages, prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_messages(turns: Sequence[dict[str, str]], short_answer: bool = False) -> list[Message]:
    """LLaVA turns (``from``/``value``) as chat messages, as the training conversations have them.

    The image placeholder moves to the front of its turn, followed by a new line (LLaVA's and
    the FUSE authors' ``preprocess_multimodal``).

    Args:
        turns: the LLaVA turns.
        short_answer: append :data:`SHORT_ANSWER_PROMPT` to every user turn.

    Returns:
        ``{"role", "content"}`` messages.
    """
    messages = []
    for turn in turns:
        role = ROLES[turn["from"]]
        text = str(turn["value"]).strip()
        if IMAGE_TOKEN in text:
            text = IMAGE_TOKEN + "\n" + text.replace(IMAGE_TOKEN, "").strip()
        if role == "user" and short_answer:
            text = f"{text}\n{SHORT_ANSWER_PROMPT}"
        messages.append({"role": role, "content": text})
    return messages


def generation_prompt_text(
    fmt: str, tokenizer: PreTrainedTokenizerBase, question: str, short_answer: bool = False
) -> str:
    """The text of one user turn and the generation prompt, as the conversations' prompts.

    A question without :data:`IMAGE_TOKEN` gets it in front (the training conversations have
    one per sample, first in its turn).

    Args:
        fmt: the conversation format.
        tokenizer: the language model's tokenizer.
        question: the user turn.
        short_answer: append :data:`SHORT_ANSWER_PROMPT` (the data does for ``vqa``).

    Returns:
        The prompt's text (tokenized without adding special tokens).
    """
    if IMAGE_TOKEN not in question:
        question = f"{IMAGE_TOKEN}\n{question}"
    messages = chat_messages([{"from": "human", "value": question}], short_answer)
    return render(fmt, tokenizer, messages, prompt=True)[0]


def generation_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, conversation: str | None = None
) -> list[int]:
    """Token ids of one user turn and the generation prompt (:func:`generation_prompt_text`).

    Args:
        tokenizer: the language model's tokenizer.
        question: the user turn (``<image>`` is put in front when it has none).
        conversation: the conversation format (None: the tokenizer's default,
            :func:`default_conversation`).

    Returns:
        The prompt's token ids.
    """
    fmt = conversation or default_conversation(tokenizer)
    text = generation_prompt_text(fmt, tokenizer, question)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
