"""Conversation formats end each answer with the tokenizer's real EOS id, labelled alone.

The tokenizers are tiny template-less Llama-style ones written to a temporary folder
(:mod:`tests.llm_folders`), as Vicuna v1.5's is; each format's text is compared with a string
written here by hand, and the ids with that string's tokenization.
"""

from __future__ import annotations

import pytest

from tests.llm_folders import collate_one, llm_folder
from zoo.conversation_formats import default_conversation, resolve_conversation, stop_token_ids
from zoo.data.tokenize import build_tokenizer, word_level_tokenizer

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the user's questions."
)
TURNS = [
    {"from": "human", "value": "What is in the image? <image>"},  # the placeholder moves first
    {"from": "gpt", "value": "a harbour with three ships."},
    {"from": "human", "value": "How many ships?"},
    {"from": "gpt", "value": "three"},
]
ANSWERS = ["a harbour with three ships.", "three"]
Q1 = "<image>\nWhat is in the image?"
HEAD = "<|start_header_id|>{}<|end_header_id|>\n\n"
#: Each format's whole conversation and generation prompt (first question), by hand.
EXPECTED = {
    "plain": ("<s><image>a harbour with three ships.</s>", "<s><image>"),
    "vicuna_v1": (
        f"<s>{SYSTEM} USER: {Q1} ASSISTANT: a harbour with three ships.</s>"
        "USER: How many ships? ASSISTANT: three</s>",
        f"<s>{SYSTEM} USER: {Q1} ASSISTANT:",
    ),
    "llama_3": (
        f"<|begin_of_text|>{HEAD.format('user')}{Q1}<|eot_id|>{HEAD.format('assistant')}"
        f"a harbour with three ships.<|eot_id|>{HEAD.format('user')}How many ships?<|eot_id|>"
        f"{HEAD.format('assistant')}three<|eot_id|>",
        f"<|begin_of_text|>{HEAD.format('user')}{Q1}<|eot_id|>{HEAD.format('assistant')}",
    ),
    "word": (
        f"user : {Q1} assistant : a harbour with three ships. </s> user : How many ships? "
        "assistant : three </s> ",
        f"user : {Q1} assistant :",
    ),
    "template": (
        f"[user]\n{Q1}\n[assistant]\na harbour with three ships.</s>\n[user]\nHow many ships?\n"
        "[assistant]\nthree</s>\n",
        f"[user]\n{Q1}\n[assistant]\n",
    ),
}
#: A chat template for the ``template`` format (the tiny tokenizers have none of their own).
TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}"
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n{% endif %}"
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("llms")
    return {
        "vicuna": str(llm_folder(root / "vicuna")),
        "llama_3": str(llm_folder(root / "llama3", style="llama_3")),
        "template": str(llm_folder(root / "templated", chat_template=TEMPLATE)),
    }


def tokenizer_for(fmt: str, folders: dict[str, str]):
    folder = {"llama_3": "llama_3", "template": "template"}.get(fmt, "vicuna")
    return build_tokenizer(folders[folder], chat=True)


def answer_groups(ids: list[int], labels: list[int]) -> list[list[int]]:
    """The runs of labelled positions; every labelled position must carry its own id."""
    groups, current = [], []
    for i, (token, label) in enumerate(zip(ids, labels, strict=True)):
        if label == -100:
            if current:
                groups.append(current)
            current = []
        else:
            assert label == token, f"position {i} labelled {label} but holds {token}"
            current.append(token)
    return groups + ([current] if current else [])


@pytest.mark.parametrize("fmt", ["plain", "vicuna_v1", "llama_3", "word", "template"])
def test_each_answer_ends_with_the_real_eos_id_and_only_answers_are_labelled(fmt, folders):
    tokenizer = tokenizer_for(fmt, folders)
    turns = TURNS[:2] if fmt == "plain" else TURNS
    answers = ANSWERS[:1] if fmt == "plain" else ANSWERS
    text, prompt = EXPECTED[fmt]
    batch = collate_one(tokenizer, fmt, turns)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]  # the exact string
    assert (
        batch["prompt_ids"][0].tolist() == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    )
    eos = tokenizer.eos_token_id
    assert batch["prompt_ids"][0, -1] != eos  # the answer is still to be written
    groups = answer_groups(ids, labels)
    assert len(groups) == len(answers)
    for group, answer in zip(groups, answers, strict=True):
        assert group[-1] == eos, f"{fmt}: an answer ends with {group[-1]}, not the EOS {eos}"
        assert tokenizer.decode(group[:-1]).strip() == answer
    assert stop_token_ids(fmt, tokenizer)[0] == eos


def test_the_word_level_tokenizer_ends_answers_with_its_eos():
    tokenizer = build_tokenizer(
        None,
        [
            "what",
            "is",
            "in",
            "the",
            "image",
            "a",
            "harbour",
            "with",
            "three",
            "ships",
            ".",
            "how",
            "many",
            "?",
        ],
        chat=True,
    )
    assert default_conversation(tokenizer) == "word"
    batch = collate_one(tokenizer, None, TURNS)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    groups = answer_groups(ids, labels)
    assert [g[-1] for g in groups] == [tokenizer.convert_tokens_to_ids("[EOS]")] * 2
    assert [tokenizer.decode(g[:-1]) for g in groups] == ["a harbour with three ships .", "three"]


def test_defaults_and_errors_name_the_key(folders):
    vicuna = tokenizer_for("vicuna_v1", folders)
    with pytest.raises(ValueError, match=r"no chat template.*model\.init_args\.llm\.conversation"):
        default_conversation(vicuna)
    with pytest.raises(ValueError, match="no chat template"):
        resolve_conversation("template", vicuna)
    with pytest.raises(ValueError, match="lacks.*<\\|eot_id\\|>"):
        resolve_conversation("llama_3", vicuna)
    with pytest.raises(ValueError, match="not a conversation format"):
        resolve_conversation("vicuna", vicuna)
    assert default_conversation(vicuna, llava=True) == "vicuna_v1"
    assert default_conversation(tokenizer_for("template", folders)) == "template"
    assert default_conversation(word_level_tokenizer(["a"])) == "word"
    llama = tokenizer_for("llama_3", folders)
    eot = llama.convert_tokens_to_ids("<|eot_id|>")
    assert stop_token_ids("llama_3", llama) == [eot]
    # A Llama-3 tokenizer whose EOS is <|end_of_text|> (the base model's): answers still end
    # with <|eot_id|> and generation stops on both.
    llama.add_special_tokens({"eos_token": "<|end_of_text|>"})
    assert (
        stop_token_ids("llama_3", llama) == [eot, llama.eos_token_id] and eot != llama.eos_token_id
    )
    assert collate_one(llama, "llama_3", TURNS)["labels"][0, -1] == eot


def test_a_template_without_eos_after_the_answer_is_refused(folders):
    tokenizer = tokenizer_for("template", folders)
    tokenizer.chat_template = TEMPLATE.replace("{{ eos_token }}", "[end]")
    with pytest.raises(ValueError, match="does not end an answer with its EOS"):
        collate_one(tokenizer, "template", TURNS)
