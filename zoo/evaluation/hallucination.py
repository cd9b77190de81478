"""Object hallucination of a generator, exactly, from instance annotations (no GPT judge).

The model captions every test image through its own generation path
(:meth:`~zoo.models.generator.VisionLanguageGenerator.answer`, the prompt written in its
conversation format); each caption is scored against *its own* image's instances by
:class:`~zoo.metrics.hallucination.CHAIR` (CHAIR-i, CHAIR-s, coverage, count / colour /
position errors). Then it answers POPE's yes/no probes ("Is there a <class> in the image?",
:func:`~zoo.metrics.hallucination.pope_probes`) for each negative sampling, scored by
:class:`~zoo.metrics.hallucination.POPE`. The data is any
:class:`~zoo.data.coco_instances.CocoInstancesDataModule` (the embedded dataset's instances, or
a COCO-format set such as DIOR or iSAID) and the class vocabulary one of
:mod:`zoo.metrics.hallucination_vocab`'s tables or a YAML table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from lightning import LightningDataModule

from zoo.evaluation.base import Context, Evaluation
from zoo.metrics.hallucination import CHAIR, POPE, POPE_MODES, ObjectVocabulary, pope_probes
from zoo.metrics.hallucination_vocab import load_vocabulary
from zoo.models.capabilities import Generation

__all__ = ["DEFAULT_CAPTION_PROMPT", "DEFAULT_PROBE_QUESTION", "Hallucination", "probe_question"]

log = logging.getLogger(__name__)

#: The embedded dataset's (and LLaVA's) short-caption prompt.
DEFAULT_CAPTION_PROMPT = "Describe the image briefly."
#: POPE's question; ``{article}`` is ``a`` or ``an``, ``{name}`` the class.
DEFAULT_PROBE_QUESTION = "Is there {article} {name} in the image?"
#: CHAIR's counts (logged; the results table shows fractions).
_CHAIR_COUNTS = ("captions", "mentions", "count_claims", "colour_claims", "position_claims")
_SHORT_ANSWER = "Answer the question using a single word or phrase."


def probe_question(template: str, name: str) -> str:
    """A POPE question about one class.

    Args:
        template: the question with ``{name}`` (and optionally ``{article}``).
        name: the class.

    Returns:
        The question.
    """
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return template.format(article=article, name=name)


class Hallucination(Evaluation):
    """CHAIR, attribute / count errors and POPE of a generator on instance-annotated images.

    Reports ``chair_i``, ``chair_s``, ``coverage``, ``count_error``, ``colour_error``,
    ``position_error`` (NaN where no caption made such a claim) and, per POPE mode ``m``,
    ``pope_m_accuracy``, ``pope_m_precision``, ``pope_m_recall``, ``pope_m_f1``,
    ``pope_m_yes_ratio`` (definitions: :mod:`zoo.metrics.hallucination`).

    Args:
        data: a :class:`~zoo.data.coco_instances.CocoInstancesDataModule` (its test split).
        vocabulary: a built-in table (``embedded``, ``dior``, ``isaid``) or a YAML table's path.
        caption_prompt: the captioning prompt (``<image>`` is put in front).
        probe_question: POPE's question, with ``{name}`` and optionally ``{article}``.
        short_answer: append the short-answer instruction to the probes (as the VQA data does).
        pope_modes: the negative samplings to report (``random``, ``popular``, ``adversarial``).
        pope_per_image: yes-probes per image (as many no-probes).
        seed: the probes' seed.
        max_new_tokens: the most tokens of a caption (None: the model's setting).
        probe_max_new_tokens: the most tokens of a probe's answer (its first yes / no word
            decides; None: the model's setting).

    Raises:
        ValueError: an unknown POPE mode, or a question without ``{name}``.
    """

    protocol = "hallucination"
    requires = (Generation,)
    hint = "use KNN or LinearProbe for its vision tower"

    def __init__(
        self,
        data: LightningDataModule,
        vocabulary: str = "embedded",
        caption_prompt: str = DEFAULT_CAPTION_PROMPT,
        probe_question: str = DEFAULT_PROBE_QUESTION,
        short_answer: bool = True,
        pope_modes: Sequence[str] = POPE_MODES,
        pope_per_image: int = 3,
        seed: int = 0,
        max_new_tokens: int | None = None,
        probe_max_new_tokens: int | None = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(data, **kwargs)
        unknown = [m for m in pope_modes if m not in POPE_MODES]
        if unknown:
            raise ValueError(f"{self.name}: unknown pope_modes {unknown}; choose from {POPE_MODES}")
        if "{name}" not in probe_question:
            raise ValueError(
                f"{self.name}: probe_question needs '{{name}}', got {probe_question!r}"
            )
        self.vocabulary: ObjectVocabulary = load_vocabulary(vocabulary)
        self.caption_prompt = caption_prompt
        self.probe_question = probe_question + (f"\n{_SHORT_ANSWER}" if short_answer else "")
        self.pope_modes = list(pope_modes)
        self.pope_per_image = pope_per_image
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.probe_max_new_tokens = probe_max_new_tokens

    def _ask(
        self, model: Any, images: torch.Tensor, questions: list[str], max_new_tokens: int | None
    ) -> list[str]:
        answer = getattr(model, "answer", None)
        if answer is None:
            raise ValueError(f"{self.name}: {type(model).__name__} has no answer() to prompt")
        return list(answer(images, questions, max_new_tokens=max_new_tokens))

    @torch.no_grad()
    def run(self, ctx: Context) -> dict[str, float]:
        model, dm, vocab = ctx.model, self.data, self.vocabulary
        dm.setup("test")
        dataset = dm.test_dataset
        where = str(getattr(dataset, "source", "the test split"))
        present = [
            {vocab.category(str(o["category"]), where) for o in objects}
            for objects in dataset.instances
        ]
        probes = {
            mode: pope_probes(present, vocab.classes, mode, self.pope_per_image, self.seed)
            for mode in self.pope_modes
        }
        # The question about a class is the same in every mode: ask each (image, class) once.
        asked = {(p.image, p.cls) for mode_probes in probes.values() for p in mode_probes}
        by_image: dict[int, list[str]] = {}
        for image, cls in sorted(asked):
            by_image.setdefault(image, []).append(cls)
        chair = CHAIR(vocab)
        answers: dict[tuple[int, str], str] = {}
        seen: set[int] = set()
        for batch in ctx.batches(dm, "test", "hallucination"):
            images, index = batch["image"], batch["index"].tolist()
            captions = self._ask(
                model, images, [self.caption_prompt] * len(images), self.max_new_tokens
            )
            chair.update(captions, batch["instances"])
            first = not seen  # log what the model says, for reading the figures
            if first:
                log.info("%s: first caption %r", self.name, captions[0])
            seen.update(index)
            rows = [(row, cls) for row, i in enumerate(index) for cls in by_image.get(i, [])]
            for start in range(0, len(rows), len(images)):
                chunk = rows[start : start + len(images)]
                questions = [probe_question(self.probe_question, cls) for _, cls in chunk]
                picked = images[torch.tensor([row for row, _ in chunk], device=images.device)]
                for (row, cls), text in zip(
                    chunk,
                    self._ask(model, picked, questions, self.probe_max_new_tokens),
                    strict=True,
                ):
                    answers[(index[row], cls)] = text
                if first and start == 0:
                    row, cls = chunk[0]
                    log.info(
                        "%s: first probe %r -> %r",
                        self.name,
                        questions[0],
                        answers[(index[row], cls)],
                    )
        if not seen:
            raise ValueError(f"{self.name}: the test split has no images")
        scores = chair.compute()
        log.info(
            "%s: %d captions, %d class mentions, claims of count %d, colour %d, position %d",
            self.name, *(int(scores[k]) for k in _CHAIR_COUNTS),
        )  # fmt: skip
        result = {k: float(v) for k, v in scores.items() if k not in _CHAIR_COUNTS}
        for mode, mode_probes in probes.items():
            pope = POPE()
            asked_here = [p for p in mode_probes if p.image in seen]
            if not asked_here:
                raise ValueError(
                    f"{self.name}: no POPE probe ({mode}): every image has all or none of "
                    "the vocabulary's classes"
                )
            pope.update(
                [answers[(p.image, p.cls)] for p in asked_here], [p.answer for p in asked_here]
            )
            figures = pope.compute()
            log.info("%s: POPE %s, %d probes", self.name, mode, int(figures.pop("probes")))
            for key, value in figures.items():
                result[f"pope_{mode}_{key}"] = float(value)
        return result
