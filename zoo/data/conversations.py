"""LLaVA-format conversations: reading, validating, formatting with a chat template, labels.

A record is ``{"id", "image", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``
with one ``<image>`` placeholder in the first human turn, the format of LLaVA, FIT-RS,
GeoChat-Instruct and VRSBench (and of the embedded dataset's ``conversations_{split}.json``).
Optional fields the zoo uses when present: ``task`` and ``question_types`` (one per QA pair).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import default_collate
from torchgeo.datasets import NonGeoDataset
from transformers import PreTrainedTokenizerBase

from zoo.data.image_text import load_image

__all__ = [
    "IMAGE_TOKEN",
    "SHORT_ANSWER_PROMPT",
    "ConversationCollate",
    "ConversationDataset",
    "read_conversations",
    "tokenize_conversation",
]

IMAGE_TOKEN = "<image>"
#: Appended to short-answer questions, as LLaVA-1.5 and the Aquila paper do.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
         "system": "system"}


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """Read and validate a LLaVA-format JSON (or JSON-lines) file; errors name file and record."""
    if not path.is_file():
        raise FileNotFoundError(f"conversation file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        records = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()
        ]
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    for n, record in enumerate(records):
        where = f"{path}, record {n} (id {record.get('id', '?')!r})"
        turns = record.get("conversations")
        if "image" not in record or not isinstance(turns, list) or not turns:
            raise ValueError(f"{where}: needs 'image' and a non-empty 'conversations' list")
        roles = [ROLES.get(t.get("from")) for t in turns if ROLES.get(t.get("from")) != "system"]
        if None in [ROLES.get(t.get("from")) for t in turns]:
            raise ValueError(f"{where}: each turn's 'from' must be one of {sorted(ROLES)}")
        if roles[::2] != ["user"] * len(roles[::2]) or roles[1::2] != ["assistant"] * len(roles[1::2]):
            raise ValueError(f"{where}: turns must alternate human, gpt, human, gpt ...")
        if len(roles) % 2:
            raise ValueError(f"{where}: the last turn must be an answer ('gpt')")
        count = sum(str(t.get("value", "")).count(IMAGE_TOKEN) for t in turns)
        if count != 1:
            raise ValueError(f"{where}: expected exactly one {IMAGE_TOKEN} placeholder, found {count}")
    return records


def _messages(turns: Sequence[dict[str, str]], short_answer: bool) -> list[dict[str, str]]:
    """LLaVA turns -> chat messages; the image placeholder moves to the front of its turn."""
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


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, turns: Sequence[dict[str, str]], short_answer: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels that are -100 except on the answers.

    The chat template renders the conversation; the answer spans are found by rendering each
    prefix that ends with a generation prompt, so the labels cover exactly what the model
    would generate (answer text and the template's end-of-turn tokens).
    """
    messages = _messages(turns, short_answer)
    ids = _render(tokenizer, messages, prompt=False)
    labels = [-100] * len(ids)
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:k], prompt=True))
        end = len(_render(tokenizer, messages[: k + 1], prompt=False))
        labels[start:end] = ids[start:end]
    return ids, labels


class ConversationDataset(NonGeoDataset):
    """Images with LLaVA-format conversations.

    Args:
        root: folder of the images (paths in the file are relative to it).
        file: the conversation file, relative to ``root`` or absolute.
        image_size: images are resized to this square size.
        tasks: keep only records whose ``task`` is listed (None keeps all).
        single_turn: split multi-turn records into one record per question (for evaluation).
        transforms: a function applied to each sample.
    """

    def __init__(
        self,
        root: str | Path,
        file: str,
        image_size: int = 224,
        tasks: Sequence[str] | None = None,
        single_turn: bool = False,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} does not exist: point root at the folder holding the "
                "images and the LLaVA-format JSON, or use EmbeddedConversationDataModule"
            )
        self.path = self.root / file
        records = read_conversations(self.path)
        if tasks is not None:
            found = sorted({str(r.get("task")) for r in records})
            records = [r for r in records if r.get("task") in tasks]
            if not records:
                raise ValueError(
                    f"{self.path}: no record has a task in {list(tasks)}; its tasks are {found} "
                    "(set tasks to some of them, or to null to keep every record)"
                )
        if single_turn:
            records = [part for r in records for part in _split_turns(r)]
        self.records = records
        self.image_size = image_size
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        path = self.root / record["image"]
        image = load_image(path, f" (record {record.get('id', index)!r} of {self.path})")
        if image.shape[-1] != self.image_size or image.shape[-2] != self.image_size:
            image = F.interpolate(
                image[None], size=(self.image_size, self.image_size), mode="bilinear", antialias=True
            )[0]
        types = record.get("question_types") or []
        sample = {
            "image": image,
            "id": str(record.get("id", index)),
            "conversations": record["conversations"],
            "task": str(record.get("task", "")),
            "question_type": str(types[0]) if len(types) == 1 else "",
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def _split_turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (question, answer) pair, each with the image placeholder."""
    turns = [t for t in record["conversations"] if ROLES[t["from"]] != "system"]
    types = record.get("question_types") or []
    out = []
    for k in range(0, len(turns), 2):
        question = str(turns[k]["value"]).replace(IMAGE_TOKEN, "").strip()
        out.append({
            **record,
            "id": f"{record.get('id', '')}_{k // 2}",
            "conversations": [{"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"}, turns[k + 1]],
            "question_types": [types[k // 2]] if k // 2 < len(types) else [],
        })
    return out


class ConversationCollate:
    """Batch conversations for training (right-padded ids and labels) and for generation
    (left-padded prompt = the conversation up to its first answer, with that answer as the
    reference).

    Args:
        tokenizer: a tokenizer with a chat template, a pad token and the ``<image>`` token.
        max_length: sequences are truncated to this many tokens (the placeholder is kept).
        short_answer_tasks: tasks whose questions get the short-answer instruction.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_length: int = 256,
        short_answer_tasks: Sequence[str] = ("vqa",),
    ) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.short_answer_tasks = set(short_answer_tasks)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        ids, labels, prompts, questions, references = [], [], [], [], []
        for sample in samples:
            short = sample["task"] in self.short_answer_tasks
            turns = sample["conversations"]
            seq, lab = tokenize_conversation(self.tokenizer, turns, short)
            ids.append(torch.tensor(seq[: self.max_length]))
            labels.append(torch.tensor(lab[: self.max_length]))
            first = [t for t in turns if ROLES[t["from"]] != "system"][:2]
            prompt = _render(self.tokenizer, _messages(first[:1], short), prompt=True)
            prompts.append(torch.tensor(prompt[-self.max_length :]))
            questions.append(str(first[0]["value"]).replace(IMAGE_TOKEN, "").strip())
            references.append(str(first[1]["value"]).strip())
        batch = default_collate([
            {k: v for k, v in s.items() if k != "conversations"} for s in samples
        ])
        batch["input_ids"] = _pad(ids, pad, left=False)
        batch["attention_mask"] = _pad([torch.ones_like(x) for x in ids], 0, left=False)
        batch["labels"] = _pad(labels, -100, left=False)
        batch["prompt_ids"] = _pad(prompts, pad, left=True)
        batch["prompt_attention_mask"] = _pad([torch.ones_like(x) for x in prompts], 0, left=True)
        batch["question"] = questions
        batch["reference"] = references
        return batch


def _pad(rows: list[Tensor], value: int, left: bool) -> Tensor:
    length = max(len(r) for r in rows)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):  # per sample, not per token
        if left:
            out[i, length - len(row) :] = row
        else:
            out[i, : len(row)] = row
    return out
