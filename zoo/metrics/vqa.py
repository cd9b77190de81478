"""VQA exact-match accuracy with answer normalization, overall and per question type.

:func:`normalize_answer` follows the spirit of the official VQA evaluation script (lower-casing,
punctuation stripping that keeps decimal numbers, article removal, number words to digits), so
``"Two."`` and ``"2"`` match. :class:`VQAAccuracy` counts exact matches of normalized answers in
sum states (``dist_reduce_fx="sum"``), which makes it exact under DDP. It scores one ground-truth
answer per question, as in RSVQA-style remote-sensing benchmarks; VQA v2's soft accuracy over ten
human answers is not implemented.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["NUMBER_WORDS", "Judge", "VQAAccuracy", "exact_match", "normalize_answer"]

#: A judge of a VQA answer: ``judge(question, prediction, reference) -> correct``. The papers that
#: report GPT-4-judged accuracy (GeoPix's Tables IV-V) plug theirs in here; their numbers are not
#: comparable with exact match.
Judge = Callable[[str, str, str], bool]

_UNITS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]

#: Number words mapped to digits by :func:`normalize_answer`.
NUMBER_WORDS: dict[str, str] = {w: str(i) for i, w in enumerate(_UNITS)} | {
    w: str(10 * i) for i, w in enumerate(_TENS, start=2)
}

_ARTICLES = frozenset({"a", "an", "the"})
# Straight quotes stand in for typographic apostrophes and quotes before punctuation handling.
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
_THOUSANDS_SEP = re.compile(r"(?<=\d),(?=\d)")
# Group 1 marks what is kept: a decimal point ("1.5", ".5"), ":" between digits ("10:30") and an
# apostrophe inside a word ("don't"). Any other punctuation or symbol (including "_") -> a space.
_PUNCT = re.compile(
    r"((?:(?<=\d)|(?<!\S))\.(?=\d)|(?<=\d):(?=\d)|(?<=[^\W\d_])'(?=[^\W\d_]))|[^\w\s]|_"
)


def _replace_punct(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) else " "


def normalize_answer(text: str) -> str:
    """Normalize a VQA answer for exact matching.

    Rules, applied in order:

    1. lower-case and strip; typographic quotes become ASCII ones;
    2. drop commas used as thousands separators (``"1,000"`` -> ``"1000"``);
    3. replace every other punctuation or symbol character with a space, except a decimal point
       (``"3.5"``, ``".5"``), a ``:`` between digits (``"10:30"``) and an apostrophe inside a
       word, so contractions and possessives (``"don't"``, ``"dog's"``) are left as is;
    4. map number words to digits: ``"zero"`` .. ``"twenty"`` and the tens up to ``"ninety"``,
       with a tens word followed by a unit combined (``"twenty-one"`` -> ``"21"``);
    5. remove the articles ``a``, ``an`` and ``the``;
    6. collapse whitespace to single spaces.

    Examples: ``"Two."`` -> ``"2"``, ``"The red car"`` -> ``"red car"``, ``"Yes!"`` -> ``"yes"``.

    Args:
        text: An answer.

    Returns:
        The normalized answer.
    """
    text = text.lower().strip().translate(_QUOTES)
    text = _THOUSANDS_SEP.sub("", text)
    text = _PUNCT.sub(_replace_punct, text)
    out: list[str] = []
    after_tens = False  # the previous word was a tens word ("twenty", ...)
    for word in text.split():
        if after_tens and word in _UNITS[1:10]:
            out[-1] = str(int(out[-1]) + _UNITS.index(word))  # "twenty one" -> "21"
            after_tens = False
            continue
        after_tens = word in _TENS
        if word not in _ARTICLES:
            out.append(NUMBER_WORDS.get(word, word))
    return " ".join(out)


class VQAAccuracy(Metric):
    """Exact-match accuracy of normalized answers, overall and per question type.

    Example::

        metric = VQAAccuracy(question_types=["presence", "count"])
        metric.update(["Yes", "two"], ["yes", "3"], ["presence", "count"])
        metric.compute()  # {"accuracy": 0.5, "accuracy_presence": 1.0, "accuracy_count": 0.0}

    Args:
        question_types: the fixed list of question types that ``update`` may name; per-type
            counts are indexed by position in this list. ``None``: overall accuracy only.
        judge: a :data:`Judge` that decides each answer instead of :func:`exact_match`
            (``update`` then needs the questions).
        kwargs: forwarded to :class:`torchmetrics.Metric`.

    Raises:
        TypeError: If ``question_types`` is a single string.
        ValueError: If ``question_types`` has duplicates.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct: Tensor
    total: Tensor
    correct_per_type: Tensor
    total_per_type: Tensor

    def __init__(
        self, question_types: Sequence[str] | None = None, judge: Judge | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.judge = judge
        if isinstance(question_types, str):
            raise TypeError("question_types must be a sequence of strings, not a single string.")
        self.question_types: list[str] = list(question_types or [])
        if len(set(self.question_types)) != len(self.question_types):
            raise ValueError(f"question_types has duplicates: {self.question_types}.")
        self._type_index = {name: i for i, name in enumerate(self.question_types)}
        num_types = len(self.question_types)
        zero = torch.tensor(0, dtype=torch.long)
        self.add_state("correct", default=zero.clone(), dist_reduce_fx="sum")
        self.add_state("total", default=zero.clone(), dist_reduce_fx="sum")
        per_type = torch.zeros(num_types, dtype=torch.long)
        self.add_state("correct_per_type", default=per_type.clone(), dist_reduce_fx="sum")
        self.add_state("total_per_type", default=per_type.clone(), dist_reduce_fx="sum")

    def update(
        self,
        predictions: Sequence[str],
        answers: Sequence[str],
        question_types: Sequence[str] | None = None,
        questions: Sequence[str] | None = None,
    ) -> None:
        """Add a batch of predicted and ground-truth answers.

        Args:
            predictions: ``B`` predicted answers.
            answers: ``B`` ground-truth answers.
            question_types: ``B`` question types, each one of the types given at init. ``None``:
                the batch only counts towards the overall accuracy.
            questions: ``B`` questions (needed with a ``judge``).

        Raises:
            TypeError: If the predictions or answers are a single string.
            ValueError: If the counts differ, a question type is unknown, or a judged metric
                gets no questions.
        """
        if self.judge is not None and (questions is None or len(questions) != len(answers)):
            raise ValueError("a judged VQAAccuracy needs one question per answer (questions=...)")
        if isinstance(predictions, str) or isinstance(answers, str):
            raise TypeError("predictions and answers must be sequences of strings.")
        if len(predictions) != len(answers):
            raise ValueError(f"Got {len(predictions)} predictions but {len(answers)} answers.")
        index: list[int] | None = None
        if question_types is not None:
            if isinstance(question_types, str) or len(question_types) != len(answers):
                raise ValueError(
                    f"question_types must list one type per sample ({len(answers)}), "
                    f"got {question_types!r}."
                )
            unknown = sorted({t for t in question_types if t not in self._type_index})
            if unknown:
                raise ValueError(
                    f"Unknown question type(s) {unknown}; known types: {self.question_types}."
                )
            index = [self._type_index[t] for t in question_types]

        if self.judge is not None:
            assert questions is not None
            hits = [
                bool(self.judge(q, p, a))
                for q, p, a in zip(questions, predictions, answers, strict=True)
            ]
        else:
            hits = [exact_match("", p, a) for p, a in zip(predictions, answers, strict=True)]
        device = self.correct.device
        hits_t = torch.tensor(hits, dtype=torch.bool, device=device)
        self.correct += hits_t.sum()
        self.total += len(hits)
        if index is not None:
            index_t = torch.tensor(index, dtype=torch.long, device=device)
            num_types = len(self.question_types)
            self.total_per_type += torch.bincount(index_t, minlength=num_types)
            self.correct_per_type += torch.bincount(index_t[hits_t], minlength=num_types)

    def compute(self) -> dict[str, Tensor]:
        """The accuracies of every sample seen so far.

        Returns:
            Overall ``accuracy`` and ``accuracy_<type>`` for every type that had samples.

        Raises:
            ValueError: If no sample was seen.
        """
        if int(self.total) == 0:
            raise ValueError("VQAAccuracy has no samples: call update() before compute().")
        results = {"accuracy": self.correct.float() / self.total}
        for i, name in enumerate(self.question_types):
            if int(self.total_per_type[i]) > 0:
                results[f"accuracy_{name}"] = (
                    self.correct_per_type[i].float() / self.total_per_type[i]
                )
        return results


def exact_match(question: str, prediction: str, reference: str) -> bool:
    """The default judge: the normalized answers are equal (the question is not read).

    Args:
        question: The question (unused; a :data:`Judge` takes it).
        prediction: The predicted answer.
        reference: The ground-truth answer.

    Returns:
        Whether the normalized answers are equal (:func:`normalize_answer`).
    """
    return normalize_answer(prediction) == normalize_answer(reference)
