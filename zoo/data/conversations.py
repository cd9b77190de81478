"""LLaVA-format conversations: reading, validating, formatting (:mod:`zoo.conversation_formats`),
labels.

A record is ``{"id", "image", "conversations": [{"from": "human"|"gpt"|"system", "value"}]}``
with one ``<image>`` placeholder (anywhere in the conversation; it is moved to the front of its
turn), the format of LLaVA, FIT-RS, GeoChat-Instruct and VRSBench (and of the embedded dataset's
``conversations_{split}.json``). Files are a JSON list or JSON lines. Optional fields the zoo
uses when present: ``task``, ``question_types`` (one per QA pair), ``references`` (all
reference answers of a one-question record, e.g. the five captions of a caption benchmark) and
the image's coordinates (``location: [lat, lon]`` or ``lat``/``lon``, degrees; every record of
a file or none: :mod:`zoo.data.record_locations`), which samples carry as ``location``.

The variants of the remote-sensing instruction sets are normalized by :func:`normalize_record`:

* ``"from"`` is matched case-insensitively (``human``/``gpt``, ``user``/``assistant``) and a
  number ``"value"`` is read as text;
* ``image_id`` stands for a missing ``image``; an ``image`` without extension is looked up with
  the usual image extensions (:data:`IMAGE_EXTENSIONS`) when the file is read;
* ``question_id`` stands for a missing ``id``;
* without a ``task``, a leading task tag of the first question (GeoChat's and VRSBench's
  ``[vqa]``, ``[caption]``, ``[refer]``, ``[grounding]``, ``[identify]``) gives it
  (:data:`TASK_TAGS`); the tag stays in the text, the models were trained with it;
* one-question evaluation records (VRSBench ``{"image_id", "question", "ground_truth",
  "question_id", "type"}``, GeoChat-Bench and FIT-RSFG-Bench ``{"question_id", "image",
  "text"|"question", "ground_truth", "category"}``) become one-turn records with
  ``question_types = [type or category]`` and ``task`` from :data:`EVAL_TYPE_TASKS`
  (``vqa`` for any other type).

The instruction sets (configs in ``configs/data/{geochat,fit_rs,vrsbench}.yaml``):

* GeoChat-Instruct: K. Kuckreja, M. S. Danish, M. Naseer, A. Das, S. Khan and F. S. Khan,
  "GeoChat: Grounded Large Vision-Language Model for Remote Sensing", CVPR 2024;
  https://huggingface.co/datasets/MBZUAI/GeoChat_Instruct (licence on the dataset card).
* FIT-RS: J. Luo et al., "SkySenseGPT: A Fine-Grained Instruction Tuning Dataset and Model for
  Remote Sensing Vision-Language Understanding", arXiv:2406.10100, 2024;
  https://huggingface.co/datasets/ll-13/FIT-RS (CC BY-NC 4.0).
* VRSBench: X. Li, J. Ding and M. Elhoseiny, "VRSBench: A Versatile Vision-Language Benchmark
  Dataset for Remote Sensing Image Understanding", NeurIPS 2024 Datasets and Benchmarks;
  https://huggingface.co/datasets/xiang709/VRSBench (CC BY 4.0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import default_collate
from torchgeo.datasets import NonGeoDataset
from transformers import PreTrainedTokenizerBase

from zoo.conversation_formats import (
    IMAGE_TOKEN,
    ROLES,
    SHORT_ANSWER_PROMPT,
    chat_messages,
    default_conversation,
    generation_prompt,
    prompt_ids,
    resolve_conversation,
    tokenize_messages,
)
from zoo.data.bands import RGB, BandChoice
from zoo.data.image_text import load_image
from zoo.data.record_locations import record_locations
from zoo.preprocessing import pad_to_square

__all__ = [
    "EVAL_TYPE_TASKS",
    "IMAGE_EXTENSIONS",
    "IMAGE_TOKEN",
    "SHORT_ANSWER_PROMPT",
    "TASK_TAGS",
    "ConversationCollate",
    "ConversationDataset",
    "generation_prompt",
    "normalize_record",
    "pad_to_square",
    "prepare_records",
    "read_conversations",
    "tokenize_conversation",
]


#: Leading task tags of GeoChat-Instruct and VRSBench questions -> the zoo's task names.
TASK_TAGS = {
    "caption": "caption",
    "vqa": "vqa",
    "refer": "referring",
    "grounding": "grounding",
    "identify": "identify",
}
#: ``type``/``category`` of one-question evaluation records that are not VQA -> task names.
EVAL_TYPE_TASKS = {"caption": "caption", "ref": "referring", "refer": "referring"}
#: Tried in this order for an ``image`` given without extension.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_TASK_TAG = re.compile(r"^\s*(?:<image>\s*)?\[(\w+)\]")
_QUESTION_KEYS = ("question", "text")
_ANSWER_KEYS = ("ground_truth", "answer")
_TYPE_KEYS = ("type", "category")


def _first(record: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((record[k] for k in keys if record.get(k) not in (None, "")), None)


def _text(value: Any) -> Any:
    """Numbers as text (an answer written ``2``); anything else as it is (validated later)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def normalize_record(record: Any, where: str = "record") -> dict[str, Any]:
    """Return the LLaVA record of one record in any supported variant (see the module doc).

    The input is not modified.

    Args:
        record: a record in any supported variant.
        where: names the record in errors.

    Returns:
        The record with ``image``, ``id`` and a ``conversations`` list.

    Raises:
        ValueError: the record is not an object, or has neither ``conversations`` nor a question
            and an answer.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    out = dict(record)
    if out.get("image") in (None, "") and out.get("image_id") not in (None, ""):
        out["image"] = out["image_id"]
    if "id" not in out and "question_id" in out:
        out["id"] = out["question_id"]
    qtype = _first(record, _TYPE_KEYS)
    if "conversations" not in out:
        question, answer = _first(record, _QUESTION_KEYS), _first(record, _ANSWER_KEYS)
        if question is None or answer is None:
            raise ValueError(
                f"{where}: needs a 'conversations' list, or (an evaluation record) a question "
                f"{list(_QUESTION_KEYS)} and an answer {list(_ANSWER_KEYS)}; found the keys "
                f"{sorted(record)}"
            )
        text = str(question)
        out["conversations"] = [
            {"from": "human", "value": text if IMAGE_TOKEN in text else f"{IMAGE_TOKEN}\n{text}"},
            {"from": "gpt", "value": str(answer)},
        ]
        if qtype is not None:
            out.setdefault("question_types", [str(qtype)])
        out.setdefault("task", EVAL_TYPE_TASKS.get(str(qtype).lower(), "vqa"))
        return out
    turns = out["conversations"]
    if isinstance(turns, list):
        out["conversations"] = [
            {**t, "from": str(t["from"]).lower(), "value": _text(t.get("value"))}
            if isinstance(t, dict) and "from" in t
            else t
            for t in turns
        ]
        dialogue = [
            t for t in out["conversations"] if isinstance(t, dict) and t.get("from") != "system"
        ]
        if "task" not in out and dialogue:
            tag = _TASK_TAG.match(str(dialogue[0].get("value", "")))
            if tag and tag.group(1).lower() in TASK_TAGS:
                out["task"] = TASK_TAGS[tag.group(1).lower()]
        if qtype is not None and "question_types" not in out and len(dialogue) == 2:
            out["question_types"] = [str(qtype)]
    return out


def _validate(record: dict[str, Any], where: str) -> None:
    turns = record.get("conversations")
    if record.get("image") in (None, "") or not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: needs 'image' and a non-empty 'conversations' list")
    if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
        raise ValueError(f"{where}: each turn needs a 'from' and a string 'value'")
    if None in [ROLES.get(t.get("from")) for t in turns]:
        raise ValueError(f"{where}: each turn's 'from' must be one of {sorted(ROLES)}")
    roles = [ROLES[t["from"]] for t in turns if ROLES[t["from"]] != "system"]
    if roles[::2] != ["user"] * len(roles[::2]) or roles[1::2] != ["assistant"] * len(roles[1::2]):
        raise ValueError(f"{where}: turns must alternate human, gpt, human, gpt ...")
    if len(roles) % 2:
        raise ValueError(f"{where}: the last turn must be an answer ('gpt')")
    count = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    if count != 1:
        raise ValueError(f"{where}: expected exactly one {IMAGE_TOKEN} placeholder, found {count}")
    references = record.get("references")
    if references is not None and (
        not isinstance(references, list)
        or not references
        or not all(isinstance(r, str) and r.strip() for r in references)
    ):
        raise ValueError(f"{where}: 'references' must be a non-empty list of non-empty strings")


def prepare_records(records: Sequence[Any], source: str) -> list[dict[str, Any]]:
    """Normalize (:func:`normalize_record`) and validate records.

    Args:
        records: the records, in any supported variant.
        source: names the records' origin in errors (with the record's index and id).

    Returns:
        The normalized records.

    Raises:
        ValueError: a record cannot be normalized or is invalid.
    """
    out = []
    for n, record in enumerate(records):
        ident = (
            record.get("id", record.get("question_id", "?")) if isinstance(record, dict) else "?"
        )
        where = f"{source}, record {n} (id {ident!r})"
        record = normalize_record(record, where)
        _validate(record, where)
        out.append(record)
    return out


def read_conversations(path: Path) -> list[dict[str, Any]]:
    """Read, normalize and validate a LLaVA-format JSON list or JSON-lines file.

    Also reads the variants listed in the module doc; errors name the file and the record or
    line.

    Args:
        path: the conversation file.

    Returns:
        The normalized records.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (lines), or a record is invalid.
    """
    if not path.is_file():
        raise FileNotFoundError(f"conversation file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
    else:
        records = []
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {n}: not valid JSON ({error}); a conversation file is a JSON "
                    "list of records or JSON lines (one record per line)"
                ) from error
    return prepare_records(records, str(path))


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase,
    turns: Sequence[dict[str, str]],
    short_answer: bool = False,
    conversation: str | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and its training labels.

    The labels are -100 except on the answers and the token that ends each (the tokenizer's EOS;
    ``<|eot_id|>`` for ``llama_3``); see :func:`~zoo.conversation_formats.tokenize_messages`.

    Args:
        tokenizer: the language model's tokenizer.
        turns: the LLaVA turns (``from``/``value``).
        short_answer: append :data:`SHORT_ANSWER_PROMPT` to every user turn.
        conversation: the conversation format (None: the tokenizer's default).

    Returns:
        ``(input_ids, labels)``.
    """
    fmt = conversation or default_conversation(tokenizer)
    return tokenize_messages(fmt, tokenizer, chat_messages(turns, short_answer))


class ConversationDataset(NonGeoDataset):
    """Images with LLaVA-format conversations, read from a file or given in memory.

    Samples hold ``image`` (float ``C×S×S`` in [0, 255]), ``id``, ``conversations``, ``task``,
    ``question_type`` (the record's only question type, else ``""``) and, when the records have
    them, ``references`` and ``location`` (float ``2``: lat, lon in degrees, checked at
    construction by :func:`~zoo.data.record_locations.record_locations`).

    Args:
        root: folder of the images (paths in the records are relative to ``root/image_dir``).
        file: the conversation file, relative to ``root`` or absolute; None with ``records``.
        image_size: images are resized to this square size.
        tasks: keep only records whose ``task`` is listed (None keeps all).
        single_turn: split multi-turn records into one record per question (for evaluation).
        transforms: a function applied to each sample.
        records: in-memory records (any variant :func:`normalize_record` reads) instead of a
            file; see :meth:`from_records`.
        image_dir: sub-folder of ``root`` that the records' image paths are relative to.
        source: names the in-memory records in errors (e.g. the file they were built from).
        pad_color: pad non-square images to a square of this colour (per band, [0, 255])
            before resizing (:func:`pad_to_square`); None stretches them.
    """

    #: The bands read from each file (the datamodule sets its own, :mod:`zoo.data.bands`).
    band_choice: BandChoice = RGB

    def __init__(
        self,
        root: str | Path,
        file: str | None = None,
        image_size: int = 224,
        tasks: Sequence[str] | None = None,
        single_turn: bool = False,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        records: Sequence[dict[str, Any]] | None = None,
        image_dir: str = "",
        source: str = "in-memory records",
        pad_color: Sequence[float] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"dataset root {self.root} does not exist: point root at the folder holding the "
                "images and the LLaVA-format JSON, or use EmbeddedConversationDataModule"
            )
        if (file is None) == (records is None):
            raise ValueError("give either file (a conversation file) or records (in memory)")
        if file is not None:
            self.path = self.root / file
            records = read_conversations(self.path)
        else:
            self.path = Path(source)
            records = prepare_records(records, source)
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
        #: float ``N×2`` (lat, lon) of the records, or None when they have no coordinates.
        self.locations = record_locations(records, str(self.path))
        self.images = self.root / image_dir
        self.image_size = image_size
        self.transforms = transforms
        self.pad_color = None if pad_color is None else [float(v) for v in pad_color]

    @classmethod
    def from_records(
        cls,
        root: str | Path,
        records: Sequence[dict[str, Any]],
        image_size: int = 224,
        *,
        source: str = "in-memory records",
        image_dir: str = "",
        tasks: Sequence[str] | None = None,
        single_turn: bool = False,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> ConversationDataset:
        """A dataset of records built in memory (no file), validated like a file's.

        Args:
            root: folder of the images.
            records: the records (any variant :func:`normalize_record` reads).
            image_size: images are resized to this square size.
            source: names the records in errors (e.g. the file they were built from).
            image_dir: sub-folder of ``root`` that the records' image paths are relative to.
            tasks: keep only records whose ``task`` is listed (None keeps all).
            single_turn: split multi-turn records into one record per question.
            transforms: a function applied to each sample.

        Returns:
            The dataset.
        """
        return cls(
            root,
            None,
            image_size,
            tasks,
            single_turn,
            transforms,
            records=records,
            image_dir=image_dir,
            source=source,
        )

    def __len__(self) -> int:
        return len(self.records)

    def lengths(
        self,
        tokenizer: PreTrainedTokenizerBase,
        short_answer_tasks: Sequence[str] = ("vqa",),
        max_length: int | None = None,
        conversation: str | None = None,
    ) -> list[int]:
        """Each sample's token count as :class:`ConversationCollate` tokenizes it.

        What length-grouped batching sorts by. Reads no image.

        Args:
            tokenizer: the language model's tokenizer.
            short_answer_tasks: tasks whose questions get the short-answer prompt.
            max_length: cap on each count (None: no cap).
            conversation: the conversation format (None: the tokenizer's default).

        Returns:
            One token count per sample.
        """
        short = set(short_answer_tasks)
        out = []
        for record in self.records:
            turns = record["conversations"]
            n = len(
                tokenize_conversation(tokenizer, turns, record.get("task") in short, conversation)[
                    0
                ]
            )
            out.append(n if max_length is None else min(n, max_length))
        return out

    def image_path(self, record: dict[str, Any]) -> Path:
        """The record's image file.

        Args:
            record: a normalized record; an ``image`` without extension tries
                :data:`IMAGE_EXTENSIONS`.

        Returns:
            The first existing candidate, else the path as written.
        """
        path = self.images / str(record["image"])
        if path.suffix or path.is_file():
            return path
        found = (path.with_name(path.name + ext) for ext in IMAGE_EXTENSIONS)
        return next((p for p in found if p.is_file()), path)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        path = self.image_path(record)
        tried = "" if path.suffix else f", also with the extensions {list(IMAGE_EXTENSIONS)}"
        image = load_image(
            path, f" (record {record.get('id', index)!r} of {self.path}{tried})", self.band_choice
        )
        if self.pad_color is not None:
            image = pad_to_square(image, self.pad_color)
        if image.shape[-1] != self.image_size or image.shape[-2] != self.image_size:
            image = F.interpolate(
                image[None],
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=True,
            )[0]
        types = record.get("question_types") or []
        sample = {
            "image": image,
            "id": str(record.get("id", index)),
            "conversations": record["conversations"],
            "task": str(record.get("task", "")),
            "question_type": str(types[0]) if len(types) == 1 else "",
        }
        if record.get("references"):
            sample["references"] = list(record["references"])
        if self.locations is not None:
            sample["location"] = self.locations[index]
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def _split_turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One record per (question, answer) pair, each with the image placeholder; a record's
    ``references`` stay with its first question."""
    turns = [t for t in record["conversations"] if ROLES[t["from"]] != "system"]
    types = record.get("question_types") or []
    out = []
    for k in range(0, len(turns), 2):
        question = str(turns[k]["value"]).replace(IMAGE_TOKEN, "").strip()
        part = {
            **record,
            "id": f"{record.get('id', '')}_{k // 2}",
            "conversations": [
                {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
                turns[k + 1],
            ],
            "question_types": [types[k // 2]] if k // 2 < len(types) else [],
        }
        if k:
            part.pop("references", None)
        out.append(part)
    return out


class ConversationCollate:
    """Batch conversations for training (right-padded ids and labels) and for generation
    (left-padded prompt = the conversation up to its first answer, with that answer as the
    ``reference``, and ``references``: each sample's list of references, else ``[reference]``).

    Args:
        tokenizer: a tokenizer with an EOS, a pad token and the ``<image>`` token.
        max_length: sequences are truncated to this many tokens (the placeholder is kept).
        short_answer_tasks: tasks whose questions get the short-answer instruction.
        conversation: the conversation format (:mod:`zoo.conversation_formats`); None: the
            tokenizer's default (``word`` for the word-level tokenizer, ``template`` for one
            with a chat template).

    Each sequence and prompt must hold exactly one ``<image>`` token (the model replaces it by
    the visual tokens without checking: that would copy a count from the device every step).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int = 256,
        short_answer_tasks: Sequence[str] = ("vqa",),
        conversation: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.conversation = resolve_conversation(conversation, tokenizer)
        self.max_length = max_length
        self.short_answer_tasks = set(short_answer_tasks)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        ids, labels, prompts, questions, references, all_references = [], [], [], [], [], []
        for sample in samples:
            short = sample["task"] in self.short_answer_tasks
            turns = sample["conversations"]
            seq, lab = tokenize_conversation(self.tokenizer, turns, short, self.conversation)
            ids.append(torch.tensor(seq[: self.max_length]))
            labels.append(torch.tensor(lab[: self.max_length]))
            first = [t for t in turns if ROLES[t["from"]] != "system"][:2]
            prompt = prompt_ids(self.conversation, self.tokenizer, chat_messages(first[:1], short))
            prompts.append(torch.tensor(prompt[-self.max_length :]))
            questions.append(str(first[0]["value"]).replace(IMAGE_TOKEN, "").strip())
            references.append(str(first[1]["value"]).strip())
            all_references.append(list(sample.get("references") or [references[-1]]))
            self._check_image_token(len(ids) - 1, sample, ids[-1], prompts[-1])
        batch = default_collate(
            [  # lists of strings would be transposed: kept aside
                {k: v for k, v in s.items() if k not in ("conversations", "references")}
                for s in samples
            ]
        )
        batch["input_ids"] = _pad(ids, pad, left=False)
        batch["attention_mask"] = _pad([torch.ones_like(x) for x in ids], 0, left=False)
        batch["labels"] = _pad(labels, -100, left=False)
        batch["prompt_ids"] = _pad(prompts, pad, left=True)
        batch["prompt_attention_mask"] = _pad([torch.ones_like(x) for x in prompts], 0, left=True)
        batch["question"] = questions
        batch["reference"] = references
        batch["references"] = all_references
        return batch

    def _check_image_token(self, i: int, sample: dict[str, Any], *sequences: Tensor) -> None:
        for seq in sequences:
            count = int((seq == self.image_token_id).sum())
            if count != 1:
                raise ValueError(
                    f"sample {i} of the batch ({sample.get('id', '?')!r}) has {count} <image> "
                    "tokens; each needs exactly one (check the conversation file and that the "
                    "tokenizer knows '<image>')"
                )


def _pad(rows: list[Tensor], value: int, left: bool) -> Tensor:
    length = max(len(r) for r in rows)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):  # per sample, not per token
        if left:
            out[i, length - len(row) :] = row
        else:
            out[i, : len(row)] = row
    return out
