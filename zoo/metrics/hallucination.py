"""Exact, judge-free hallucination metrics: CHAIR, attribute and count errors, POPE.

Every number here is a count over the annotations, no language model judges anything, so the
same captions give the same figures everywhere (unlike VRSBench's GPT-4 VQA judge or CLAIR).

* :class:`ObjectVocabulary`: a dataset's object classes, each with its surface forms
  (synonyms, multi-word phrases; plurals added by rule), and the one matcher every metric uses:
  lower case, ``_`` and ``-`` read as spaces, word boundaries, the longest form first (so
  ``"storage tanks"`` is one mention of *storage tank*, not also one of *tank*; ``"planet"`` is no
  *plane*). The built-in tables are in :mod:`zoo.metrics.hallucination_vocab`.
* :class:`CHAIR` (Rohrbach et al. 2018, "Object Hallucination in Image Captioning"), per
  caption, over the *set* of classes it mentions (a class named twice counts once):

  - ``chair_i`` = mentioned classes absent from the image / mentioned classes;
  - ``chair_s`` = captions with at least one absent class / captions;
  - ``coverage`` = present classes that are mentioned / present classes.

  Like CHAIR, the matcher reads no syntax: ``"there are no ships"`` mentions *ship* (a
  hallucination if the image has none). Sums over all captions (micro averages), kept in sum
  states, so the figures are exact under DDP.
* Attribute and count hallucination (the same metric, where the annotations know them), for
  each mention of a class that *is* in the image (a mention of an absent class is already a
  CHAIR hallucination):

  - ``count_error`` = count claims that differ from the class's number of instances / count
    claims; a count claim is a number (digits or a number word) right before the mention, e.g.
    ``"3 buildings"``, ``"two large red ships"``;
  - ``colour_error`` = colour claims naming a colour no instance of the class has / colour
    claims; a colour claim is one of the vocabulary's colours right before the mention
    (``"a red building"``); scored only where the annotations carry a colour;
  - ``position_error`` = position claims naming a 3×3 cell no instance of the class is in /
    position claims; a position claim is ``in / at / on the <cell>`` right after the mention
    (``"a ship in the top left"``, ``"the tank is at the bottom"``), cells as in
    :data:`CELLS` (``centre`` and ``middle`` read as ``center``).

  Each is reported with its number of claims (``*_claims``); a rate without claims is NaN.
* :func:`pope_probes` and :class:`POPE` (Li et al. 2023, "Evaluating Object Hallucination in
  Large Vision-Language Models"): balanced yes/no questions "Is there a <class> in the
  image?" from instance annotations, negatives drawn ``random``-ly, from the ``popular``
  (most frequent) classes, or ``adversarial``-ly (most co-occurring with the image's classes),
  with a fixed seed; :func:`parse_yes_no` reads the free answer; scored as accuracy,
  precision, recall, F1 and yes-ratio.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from zoo.metrics.vqa import NUMBER_WORDS

__all__ = [
    "CELLS",
    "CHAIR",
    "POPE",
    "POPE_MODES",
    "Mention",
    "ObjectVocabulary",
    "Probe",
    "caption_claims",
    "cell_of_point",
    "parse_yes_no",
    "plural_forms",
    "pope_probes",
]

#: Names of the 3×3 grid cells, row by row (the embedded dataset's).
CELLS: tuple[str, ...] = (
    "top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
    "bottom right",
)  # fmt: skip
_CELL_ALIASES = {"centre": "center", "middle": "center"}
#: The POPE negative-sampling settings.
POPE_MODES: tuple[str, ...] = ("random", "popular", "adversarial")
PopeMode = Literal["random", "popular", "adversarial"]

_SEPARATORS = re.compile(r"[\s_\-]+")
_WORD = re.compile(r"[a-z0-9']+")
_POSITION = re.compile(
    r"\s*(?:(?:is|are)\s+)?(?:located\s+|seen\s+)?(?:in|at|on)\s+the\s+"
    r"(top left|top right|bottom left|bottom right|top|bottom|left|right|center|centre|middle)"
    r"(?![a-z0-9])"
)
_IRREGULAR = {"aircraft": "aircraft", "person": "people", "man": "men", "sheep": "sheep"}


def _normalize(text: str) -> str:
    """Lower case, ``_`` / ``-`` / runs of white space as one space (``"Storage_Tank"`` ->
    ``"storage tank"``)."""
    return _SEPARATORS.sub(" ", text.lower()).strip()


def plural_forms(form: str) -> list[str]:
    """The plural of a (multi-word) form, by English rule on its last word.

    ``tank`` -> ``tanks``, ``bus`` -> ``buses``, ``factory`` -> ``factories``, ``storage tank``
    -> ``storage tanks``; ``aircraft`` stays. Irregular ones a table can list as forms.

    Args:
        form: a normalized singular form.

    Returns:
        The plural forms (one, or none when the plural is the singular).
    """
    *head, last = form.split(" ")
    if last in _IRREGULAR:
        plural = _IRREGULAR[last]
    elif re.search(r"(s|x|z|ch|sh)$", last):
        plural = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return [] if plural == last else [" ".join([*head, plural])]


@dataclass(frozen=True)
class Mention:
    """One mention of a class in a text.

    Attributes:
        cls: the class mentioned.
        start: the mention's first character in the normalized text.
        end: one past its last character.
    """

    cls: str
    start: int
    end: int


class ObjectVocabulary:
    """A dataset's object classes and the words that name them; the one mention matcher.

    Args:
        classes: ``{class: [other forms]}``: each class is named by itself and its forms
            (synonyms, multi-word phrases, annotation spellings such as ``storagetank``), all
            in the singular; plurals are added by :func:`plural_forms`. Forms are read with
            ``_`` / ``-`` as spaces and case ignored.
        colours: the colour words annotations may carry (for colour claims).
        name: the vocabulary's name (error messages).

    Raises:
        ValueError: a form names two classes, or a class has no name.
    """

    def __init__(
        self,
        classes: Mapping[str, Sequence[str]],
        colours: Sequence[str] = (),
        name: str = "vocabulary",
    ) -> None:
        self.name = name
        self.classes: list[str] = [_normalize(c) for c in classes]
        self.colours: tuple[str, ...] = tuple(_normalize(c) for c in colours)
        #: normalized form -> class
        self.forms: dict[str, str] = {}
        for cls, others in classes.items():
            key = _normalize(cls)
            if not key:
                raise ValueError(f"{name}: a class has an empty name")
            for form in [key, *(_normalize(f) for f in others)]:
                for variant in [form, *plural_forms(form)]:
                    owner = self.forms.setdefault(variant, key)
                    if owner != key:
                        raise ValueError(
                            f"{name}: the form {variant!r} names both {owner!r} and {key!r}; "
                            "a form must name one class (remove it from one of them)"
                        )
        # Longest first: at one position the regex takes the first alternative that matches.
        alternatives = sorted(self.forms, key=lambda f: (-len(f), f))
        pattern = "|".join(re.escape(f).replace(r"\ ", " ") for f in alternatives)
        self._pattern = re.compile(rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])")
        # Annotation spellings without spaces ("storagetank", "groundtrackfield").
        self._squeezed = {f.replace(" ", ""): c for f, c in self.forms.items()}

    def mentions(self, text: str) -> tuple[str, list[Mention]]:
        """Every mention of a class in ``text``, left to right, none overlapping.

        Args:
            text: a caption or answer.

        Returns:
            The normalized text and the mentions in it (positions in the normalized text).
        """
        normalized = _normalize(text)
        found = [
            Mention(self.forms[m.group(0)], m.start(), m.end())
            for m in self._pattern.finditer(normalized)
        ]
        return normalized, found

    def mentioned(self, text: str) -> set[str]:
        """The classes ``text`` mentions.

        Args:
            text: a caption or answer.

        Returns:
            The set of classes.
        """
        return {m.cls for m in self.mentions(text)[1]}

    def category(self, name: str, where: str = "annotations") -> str:
        """The class an annotation's category name belongs to.

        Args:
            name: the category name as the annotation file spells it (``Storage_Tank``,
                ``storagetank``, ``large-vehicle``).
            where: the file or field the name comes from (error messages).

        Returns:
            The class.

        Raises:
            KeyError: the name is none of the vocabulary's forms.
        """
        key = _normalize(name)
        cls = self.forms.get(key) or self._squeezed.get(key.replace(" ", ""))
        if cls is None:
            raise KeyError(
                f"{where}: the category {name!r} is not in the object vocabulary {self.name!r} "
                f"(classes {self.classes}); add it as a class or as a form of one "
                "(docs/evaluation.md, 'Hallucination vocabularies')"
            )
        return cls

    @classmethod
    def from_table(cls, table: Mapping[str, Any], name: str = "vocabulary") -> ObjectVocabulary:
        """A vocabulary from a table ``{"classes": {class: [forms]}, "colours": [...]}``.

        Args:
            table: the table (a built-in one or a YAML file's contents).
            name: the table's name (error messages).

        Returns:
            The vocabulary.

        Raises:
            ValueError: the table has no ``classes`` mapping.
        """
        classes = table.get("classes") if isinstance(table, Mapping) else None
        if not isinstance(classes, Mapping) or not classes:
            raise ValueError(
                f"{name}: a vocabulary table needs 'classes': {{class: [forms, ...]}}, "
                f"got {type(table).__name__} with keys {sorted(table) if isinstance(table, Mapping) else []}"
            )
        forms = {str(k): [str(f) for f in (v or [])] for k, v in classes.items()}
        return cls(forms, [str(c) for c in table.get("colours") or []], name)


def cell_of_point(x: float, y: float, width: float, height: float) -> str:
    """The 3×3 grid cell of a point (the embedded data's :func:`~zoo.data.embedded.scene_graph.cell_of`).

    Args:
        x: the point's column in pixels (a pixel's centre is at ``index + 0.5``).
        y: the point's row in pixels.
        width: the image's width in pixels.
        height: the image's height in pixels.

    Returns:
        One of :data:`CELLS`.
    """
    col = min(max(int(3.0 * x / width), 0), 2)
    row = min(max(int(3.0 * y / height), 0), 2)
    return CELLS[3 * row + col]


@dataclass
class _Claims:
    """What one text says about the classes it mentions."""

    mentioned: set[str] = field(default_factory=set)
    counts: list[tuple[str, int]] = field(default_factory=list)
    colours: list[tuple[str, str]] = field(default_factory=list)
    cells: list[tuple[str, str]] = field(default_factory=list)


_SKIP_BEFORE = frozenset({"small", "large", "big", "tiny", "huge"})


def caption_claims(text: str, vocabulary: ObjectVocabulary) -> _Claims:
    """The classes a text mentions and the counts, colours and cells it claims for them.

    Before each mention, walking back over size words and colours: a number (digits or a
    number word) is a count claim, a colour of the vocabulary a colour claim. After it, ``(is |
    are) (in | at | on) the <cell>`` is a position claim.

    Args:
        text: a caption or answer.
        vocabulary: the dataset's classes and colours.

    Returns:
        The claims (``mentioned``, ``counts``, ``colours``, ``cells``).
    """
    normalized, mentions = vocabulary.mentions(text)
    claims = _Claims(mentioned={m.cls for m in mentions})
    colours = set(vocabulary.colours)
    for m in mentions:
        before = _WORD.findall(normalized[: m.start])[-4:]
        for word in reversed(before):
            if word in colours:
                claims.colours.append((m.cls, word))
            elif word.isdigit() or word in NUMBER_WORDS:
                claims.counts.append((m.cls, int(NUMBER_WORDS.get(word, word))))
                break
            elif word not in _SKIP_BEFORE:
                break
        after = _POSITION.match(normalized, m.end)
        if after is not None:
            cell = after.group(1)
            claims.cells.append((m.cls, _CELL_ALIASES.get(cell, cell)))
    return claims


#: One annotated instance: ``{"category": class, "colour": str | None, "cell": str | None}``.
Instance = Mapping[str, Any]


class CHAIR(Metric):
    """CHAIR-i, CHAIR-s, coverage, and count / colour / position errors of captions.

    Each caption is scored against its own image's instances (see the module docstring for the
    definitions). ``compute`` returns ``chair_i``, ``chair_s``, ``coverage``,
    ``count_error``, ``colour_error``, ``position_error`` and ``mentions``, ``captions``,
    ``count_claims``, ``colour_claims``, ``position_claims``.

    Example::

        metric = CHAIR(ObjectVocabulary({"ship": ["boat"], "storage tank": ["tank"]}))
        metric.update(["two boats and a tank"], [[{"category": "ship"}, {"category": "ship"}]])
        metric.compute()  # chair_i 0.5, chair_s 1.0, coverage 1.0, count_error 0.0

    Args:
        vocabulary: the dataset's classes; instance categories are read through
            :meth:`ObjectVocabulary.category`.
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    _STATES = (
        "captions", "captions_hallucinating", "mentioned", "hallucinated", "present",
        "covered", "count_claims", "count_wrong", "colour_claims", "colour_wrong",
        "position_claims", "position_wrong",
    )  # fmt: skip

    def __init__(self, vocabulary: ObjectVocabulary, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocabulary = vocabulary
        for name in self._STATES:
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, captions: Sequence[str], instances: Sequence[Sequence[Instance]]) -> None:
        """Add a batch of captions, each with its image's instances.

        Args:
            captions: ``B`` captions or open answers.
            instances: ``B`` lists of the image's instances, each a mapping with ``category``
                and optionally ``colour`` and ``cell`` (None where unknown).

        Raises:
            TypeError: ``captions`` is a single string.
            ValueError: the numbers of captions and instance lists differ.
        """
        if isinstance(captions, str):
            raise TypeError("captions must be a sequence of strings, not one string")
        if len(captions) != len(instances):
            raise ValueError(f"got {len(captions)} captions but {len(instances)} instance lists")
        sums = dict.fromkeys(self._STATES, 0)
        for caption, objects in zip(captions, instances, strict=True):
            classes = [self.vocabulary.category(str(o["category"])) for o in objects]
            present = set(classes)
            number = Counter(classes)
            colours: dict[str, set[str]] = {}
            cells: dict[str, set[str]] = {}
            for cls, o in zip(classes, objects, strict=True):
                if o.get("colour") is not None:
                    colours.setdefault(cls, set()).add(_normalize(str(o["colour"])))
                if o.get("cell") is not None:
                    cells.setdefault(cls, set()).add(str(o["cell"]))
            claims = caption_claims(caption, self.vocabulary)
            wrong = claims.mentioned - present
            sums["captions"] += 1
            sums["captions_hallucinating"] += int(bool(wrong))
            sums["mentioned"] += len(claims.mentioned)
            sums["hallucinated"] += len(wrong)
            sums["present"] += len(present)
            sums["covered"] += len(present & claims.mentioned)
            for cls, n in claims.counts:
                if cls in present:
                    sums["count_claims"] += 1
                    sums["count_wrong"] += int(n != number[cls])
            for cls, colour in claims.colours:
                if cls in colours:
                    sums["colour_claims"] += 1
                    sums["colour_wrong"] += int(colour not in colours[cls])
            for cls, cell in claims.cells:
                if cls in cells:
                    sums["position_claims"] += 1
                    sums["position_wrong"] += int(cell not in cells[cls])
        for name, value in sums.items():
            state = getattr(self, name)
            state += value

    def compute(self) -> dict[str, Tensor]:
        """The rates over every caption seen.

        Returns:
            The rates (NaN where their denominator is zero) and the counts behind them.

        Raises:
            ValueError: no caption was seen.
        """
        if int(self.captions) == 0:
            raise ValueError("CHAIR has no captions: call update() before compute()")

        def rate(num: Tensor, den: Tensor) -> Tensor:
            return num.double() / den if int(den) > 0 else torch.tensor(float("nan"))

        return {
            "chair_i": rate(self.hallucinated, self.mentioned),
            "chair_s": rate(self.captions_hallucinating, self.captions),
            "coverage": rate(self.covered, self.present),
            "count_error": rate(self.count_wrong, self.count_claims),
            "colour_error": rate(self.colour_wrong, self.colour_claims),
            "position_error": rate(self.position_wrong, self.position_claims),
            "mentions": self.mentioned.clone(),
            "captions": self.captions.clone(),
            "count_claims": self.count_claims.clone(),
            "colour_claims": self.colour_claims.clone(),
            "position_claims": self.position_claims.clone(),
        }


# ------------------------------------------------------------------------------------- POPE
_YES = frozenset({"yes", "yeah", "yep", "true", "correct"})
_NO = frozenset({"no", "not", "none", "nope", "false", "nothing", "never"})


def parse_yes_no(answer: str) -> bool | None:
    """A free answer to a yes/no question as yes (True), no (False) or neither (None).

    The first yes-word (``yes``, ``yeah``, ``yep``, ``true``, ``correct``) or no-word (``no``,
    ``not``, ``n't``, ``none``, ``nope``, ``false``, ``nothing``, ``never``) decides: ``"Yes,
    there is."`` is yes, ``"No."`` and ``"There isn't any."`` are no, ``"There is no ship, yes"``
    is no; ``"a ship"`` is neither (POPE's script would read it as yes; here it is a wrong
    answer either way, counted in ``unparsed``).

    Args:
        answer: the model's answer.

    Returns:
        True, False or None.
    """
    for word in _WORD.findall(answer.lower().replace("n't", " not")):
        if word in _YES:
            return True
        if word in _NO:
            return False
    return None


@dataclass(frozen=True)
class Probe:
    """One POPE question.

    Attributes:
        image: the image's index in the annotation list.
        cls: the class asked about.
        answer: True when the class is in the image.
    """

    image: int
    cls: str
    answer: bool


def pope_probes(
    present: Sequence[set[str]],
    classes: Sequence[str],
    mode: PopeMode = "random",
    per_image: int = 3,
    seed: int = 0,
) -> list[Probe]:
    """Balanced yes/no object probes (POPE) from each image's annotated classes.

    Per image: ``n = min(per_image, present, absent)`` present classes drawn at random are the
    yes-probes and ``n`` absent classes the no-probes, drawn by ``mode``: ``random`` uniformly,
    ``popular`` the absent classes in most images of the set, ``adversarial`` the absent
    classes that co-occur most often (in the set's images) with the image's present ones; ties
    in the latter two go to the class listed first. Images with no present or no absent class
    give no probes. Deterministic for ``seed``.

    Args:
        present: each image's set of classes (from its instances).
        classes: every class of the vocabulary, in order.
        mode: the negative sampling.
        per_image: the most yes-probes (and as many no-probes) per image.
        seed: the random draws' seed.

    Returns:
        The probes, image by image, yes before no.

    Raises:
        ValueError: an unknown ``mode``, ``per_image`` < 1, or a present class that is not one
            of ``classes``.
    """
    if mode not in POPE_MODES:
        raise ValueError(f"POPE mode must be one of {POPE_MODES}, got {mode!r}")
    if per_image < 1:
        raise ValueError(f"per_image must be at least 1, got {per_image}")
    index = {c: i for i, c in enumerate(classes)}
    k = len(classes)
    has = np.zeros((len(present), k), dtype=np.int64)
    for i, names in enumerate(present):
        for c in names:
            if c not in index:
                raise ValueError(f"image {i}: class {c!r} is not among the classes {list(classes)}")
            has[i, index[c]] = 1
    frequency = has.sum(0)
    cooccurrence = has.T @ has
    rng = np.random.default_rng(seed)
    probes: list[Probe] = []
    for i in range(len(present)):
        yes = np.flatnonzero(has[i])
        no = np.flatnonzero(has[i] == 0)
        n = min(per_image, len(yes), len(no))
        if n == 0:
            continue
        chosen = rng.choice(yes, n, replace=False)
        if mode == "random":
            negatives = rng.choice(no, n, replace=False)
        else:
            score = frequency[no] if mode == "popular" else cooccurrence[yes][:, no].sum(0)
            negatives = no[np.argsort(-score, kind="stable")[:n]]
        probes += [Probe(i, classes[c], True) for c in sorted(chosen)]
        probes += [Probe(i, classes[c], False) for c in negatives]
    return probes


class POPE(Metric):
    """POPE's figures of yes/no answers: accuracy, precision, recall, F1, yes-ratio.

    ``yes`` is the positive class. An answer :func:`parse_yes_no` cannot read counts as wrong
    (in ``accuracy`` and ``recall``) and is neither yes nor no (``unparsed`` is its share).
    Sum states: exact under DDP.

    Args:
        kwargs: forwarded to :class:`torchmetrics.Metric`.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("tp", "fp", "tn", "fn", "unparsed_yes", "unparsed_no"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, answers: Sequence[str], truths: Sequence[bool]) -> None:
        """Add a batch of answers to probes.

        Args:
            answers: ``B`` free answers.
            truths: ``B`` right answers (True: the class is in the image).

        Raises:
            ValueError: the numbers differ, or ``answers`` is one string.
        """
        if isinstance(answers, str) or len(answers) != len(truths):
            raise ValueError(f"need one answer per probe, got {answers!r} for {len(truths)}")
        for answer, truth in zip(answers, truths, strict=True):
            said = parse_yes_no(answer)
            if said is None:
                name = "unparsed_yes" if truth else "unparsed_no"
            else:
                name = {(True, True): "tp", (True, False): "fp", (False, True): "fn"}.get(
                    (said, bool(truth)), "tn"
                )
            state = getattr(self, name)
            state += 1

    def compute(self) -> dict[str, Tensor]:
        """The figures over every probe seen.

        Returns:
            ``accuracy``, ``precision`` (NaN without a yes), ``recall``, ``f1``, ``yes_ratio``,
            ``unparsed`` and ``probes``.

        Raises:
            ValueError: no probe was seen.
        """
        tp, fp, tn, fn = (x.double() for x in (self.tp, self.fp, self.tn, self.fn))
        positives = tp + fn + self.unparsed_yes
        total = positives + fp + tn + self.unparsed_no
        if int(total) == 0:
            raise ValueError("POPE has no probes: call update() before compute()")
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        precision = tp / (tp + fp) if int(tp + fp) > 0 else nan
        recall = tp / positives if int(positives) > 0 else nan
        f1 = 2 * tp / (2 * tp + fp + fn + self.unparsed_yes)
        return {
            "accuracy": (tp + tn) / total,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "yes_ratio": (tp + fp) / total,
            "unparsed": (self.unparsed_yes + self.unparsed_no) / total,
            "probes": total,
        }
