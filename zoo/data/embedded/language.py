"""The language side: captions, descriptions, VQA and referring expressions.

Every text is built from a :class:`~.scene_graph.SceneGraph` and the templates of
:mod:`.words`, so counts, colours and positions agree with the annotations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo.data.embedded.geo import Climate
from zoo.data.embedded.rng import between, pick
from zoo.data.embedded.scene_graph import OBJECT_CATEGORIES, SceneGraph, SceneObject
from zoo.data.embedded.words import (
    ANSWERS_YES_NO,
    ARTICLES,
    CAPTIONS_COUNTS,
    CAPTIONS_NO_SCENE,
    CAPTIONS_OBJECT,
    CAPTIONS_PLAIN,
    DESC_COUNTS,
    DESC_EMPTY,
    DESC_LARGEST,
    DESC_LOCATION,
    DESC_OBJECT,
    DESC_OPENERS,
    DESC_VEGETATION,
    EXTREMES,
    GROUND_SENTENCES,
    JOINERS,
    POSITION_PHRASES,
    Q_BAND,
    Q_COLOUR,
    Q_COUNT,
    Q_HEMISPHERE,
    Q_OBJECT,
    Q_POSITION,
    Q_PRESENCE,
    Q_SCENE,
    RELATIONS,
    SCENE_PHRASES,
    SUPERLATIVES,
    plural,
)

__all__ = ["SceneTexts", "describe_scene", "location_questions"]

_NO_POSITION = frozenset({"road"})  # elongated objects: a centroid position would mislead


@dataclass
class SceneTexts:
    """The texts of one scene.

    Attributes:
        caption: the short caption.
        description: the longer description.
        qa: the questions, as ``(question type, question, answer)``.
        refs: the referring expressions, as ``(object index, 1 or 2 expressions that single it
            out)``.
        location_qa: the location questions (:func:`location_questions`), as ``(question
            type, question, answer)``; empty unless given.
    """

    caption: str
    description: str
    qa: list[tuple[str, str, str]]  # (question type, question, answer)
    refs: list[tuple[int, list[str]]]  # (object index, 1 or 2 expressions that single it out)
    location_qa: list[tuple[str, str, str]] = field(default_factory=list)


def describe_scene(rng: np.random.Generator, graph: SceneGraph) -> SceneTexts:
    """The referring expressions, caption, description and questions of a scene.

    Drawn in this order from ``rng``.

    Args:
        rng: the generator's random state.
        graph: the scene's objects, counts and climate.

    Returns:
        The scene's texts.
    """
    objects, counts = graph.objects, graph.counts
    by_category = _groups(objects)
    refs = [(i, s) for i in range(len(objects)) if (s := _referring(rng, objects, i, by_category))]
    if objects and not refs:
        refs = [
            (i, s) for i in range(len(objects))
            if (s := _referring(rng, objects, i, by_category, fallback=True))
        ]  # fmt: skip
    return SceneTexts(
        caption=_caption(rng, graph.scene, objects, counts),
        description=_description(rng, graph.scene, objects, counts, graph.climate),
        qa=_questions(rng, graph.scene, objects, counts),
        refs=refs,
    )


def location_questions(rng: np.random.Generator, graph: SceneGraph) -> list[tuple[str, str, str]]:
    """Questions whose answer depends on where the scene is, not on what it shows.

    Its hemisphere (``northern`` / ``southern``, from the sign of the latitude) and its
    latitude band (``tropics``, ``subtropics``, ``mid latitudes``, ``high latitudes``, from
    ``|lat|`` at 23.5, 35 and 60 degrees: :func:`~.geo.climate`'s words, which the
    descriptions use too), in an order drawn from ``rng``. The painters' palettes depend on the
    latitude too (:mod:`.geo`), so the pixels carry part of the answer; docs/evaluation.md
    measures how much.

    Args:
        rng: a random state of its own (the other texts' draws stay as they were).
        graph: the scene (its ``climate`` holds the words of its location).

    Returns:
        ``(question type, question, answer)`` triples, types from
        :data:`~.words.LOCATION_QUESTION_TYPES`.
    """
    qa = [
        ("hemisphere", pick(rng, Q_HEMISPHERE), graph.climate.hemisphere),
        ("band", pick(rng, Q_BAND), graph.climate.band),
    ]
    order = rng.permutation(len(qa)).tolist()
    return [qa[i] for i in order]


def _noun(category: str, n: int) -> str:
    return category if n == 1 else plural(category)


def _with_article(phrase: str) -> str:
    return f"{ARTICLES[int(phrase[0] in 'aeiou')]} {phrase}"


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _join(parts: Sequence[str]) -> str:
    comma, conjunction = JOINERS
    if len(parts) == 1:
        return parts[0]
    return f"{comma} ".join(parts[:-1]) + f" {conjunction} " + parts[-1]


def _counts_phrase(counts: Counter[str], categories: Sequence[str]) -> str:
    return _join([f"{counts[c]} {_noun(c, counts[c])}" for c in categories])


def _describe(obj: SceneObject, with_size: bool = True) -> str:
    """Adjectives and noun, e.g. ``large white ship``."""
    words = [obj.size] if with_size and obj.size else []
    return " ".join([*words, obj.colour, obj.category])


def _largest_with_margin(objects: Sequence[SceneObject], category: str) -> SceneObject | None:
    """The largest object of a category when it is clearly (1.3×) larger than the others."""
    same = sorted((o for o in objects if o.category == category), key=lambda o: -o.area)
    if len(same) >= 2 and same[0].area >= 1.3 * same[1].area:
        return same[0]
    return None


def _caption(
    rng: np.random.Generator, scene: str, objects: Sequence[SceneObject], counts: Counter[str]
) -> str:
    np_ = SCENE_PHRASES[scene]
    scene_a = _with_article(scene)
    present = sorted(counts, key=lambda c: (-counts[c], OBJECT_CATEGORIES.index(c)))
    if not present:
        return pick(rng, CAPTIONS_PLAIN).format(np=np_, scene_a=scene_a)
    k = min(len(present), between(rng, 1, 3))
    chosen = sorted(rng.choice(len(present), size=k, replace=False).tolist())
    counts_text = _counts_phrase(counts, [present[i] for i in chosen])
    roll = rng.random()
    if roll < 0.08:
        return pick(rng, CAPTIONS_NO_SCENE).format(counts=counts_text)
    singles = [o for o in objects if counts[o.category] == 1 and o.category not in _NO_POSITION]
    if roll < 0.25 and singles:
        obj = pick(rng, singles)
        return pick(rng, CAPTIONS_OBJECT).format(
            obj_a=_with_article(_describe(obj)), pos=POSITION_PHRASES[obj.cell], np=np_
        )
    if roll < 0.33:
        return pick(rng, CAPTIONS_PLAIN).format(np=np_, scene_a=scene_a)
    return pick(rng, CAPTIONS_COUNTS).format(np=np_, scene_a=scene_a, counts=counts_text)


def _description(
    rng: np.random.Generator, scene: str, objects: Sequence[SceneObject], counts: Counter[str],
    climate: Climate,
) -> str:  # fmt: skip
    sentences = [pick(rng, DESC_OPENERS).format(np=SCENE_PHRASES[scene])]
    sentences.append(GROUND_SENTENCES[scene])
    if scene not in ("desert", "snow", "industrial"):
        sentences.append(pick(rng, DESC_VEGETATION).format(veg=climate.vegetation_word))
    if counts:
        order = sorted(counts, key=lambda c: (-counts[c], OBJECT_CATEGORIES.index(c)))
        sentences.append(pick(rng, DESC_COUNTS).format(counts=_counts_phrase(counts, order)))
    else:
        sentences.append(pick(rng, DESC_EMPTY))
    singles = [o for o in objects if counts[o.category] == 1 and o.category not in _NO_POSITION]
    for i in rng.permutation(len(singles))[:2].tolist():
        obj = singles[i]
        sentences.append(_sentence(pick(rng, DESC_OBJECT).format(
            obj_a=_with_article(_describe(obj)), pos=POSITION_PHRASES[obj.cell])))  # fmt: skip
    for category in OBJECT_CATEGORIES:
        largest = _largest_with_margin(objects, category)
        if largest is not None and category not in ("tree", "road"):
            sentences.append(DESC_LARGEST[0].format(c=category, colour=largest.colour))
            break
    sentences.append(pick(rng, DESC_LOCATION).format(band=climate.band, hemi=climate.hemisphere))
    return " ".join(sentences)


def _questions(
    rng: np.random.Generator, scene: str, objects: Sequence[SceneObject], counts: Counter[str]
) -> list[tuple[str, str, str]]:
    """(question type, question, answer) triples consistent with the annotations."""
    qa: list[tuple[str, str, str]] = [("category", pick(rng, Q_SCENE), scene)]
    present = [c for c in OBJECT_CATEGORIES if counts[c] > 0]
    absent = [c for c in OBJECT_CATEGORIES if counts[c] == 0]
    yes, no = ANSWERS_YES_NO
    for pool, answer in ((present, yes), (absent, no)):
        if pool:
            c = pick(rng, pool)
            q = pick(rng, Q_PRESENCE).format(c_a=_with_article(c), p=plural(c))
            qa.append(("presence", q, answer))
    pool = present if present and (rng.random() < 0.85 or not absent) else absent
    c = pick(rng, pool)
    qa.append(("count", pick(rng, Q_COUNT).format(p=plural(c)), str(counts[c])))
    singles = [o for o in objects if counts[o.category] == 1]
    placed = [o for o in singles if o.category not in _NO_POSITION]
    if placed:
        obj = pick(rng, placed)
        qa.append(("position", pick(rng, Q_POSITION).format(c=obj.category), obj.cell))
    referable = [(f"the {o.category}", o) for o in singles]
    for category in present:
        largest = _largest_with_margin(objects, category)
        if largest is not None:
            referable.append((f"the {SUPERLATIVES['largest'][0]} {category}", largest))
    informative = [(r, o) for r, o in referable if o.category not in ("road", "tree")]
    if informative or referable:
        ref, obj = pick(rng, informative or referable)
        qa.append(("colour", pick(rng, Q_COLOUR).format(ref=ref), obj.colour))
    by_cell = Counter(o.cell for o in objects if o.category not in _NO_POSITION)
    lone = [o for o in objects if o.category not in _NO_POSITION and by_cell[o.cell] == 1]
    if lone:
        obj = pick(rng, lone)
        q = pick(rng, Q_OBJECT).format(pos=POSITION_PHRASES[obj.cell])
        qa.append(("category", q, obj.category))
    order = rng.permutation(len(qa)).tolist()
    return [qa[i] for i in order]


_ATTRIBUTE_SETS = (
    ("colour",), ("cell",), ("size",), ("colour", "cell"), ("size", "cell"), ("size", "colour"),
)  # fmt: skip


@dataclass
class _Group:
    """The objects of one category in an image, as arrays (for referring expressions)."""

    members: np.ndarray
    area: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    colour: np.ndarray
    cell: np.ndarray


def _groups(objects: Sequence[SceneObject]) -> dict[str, _Group]:
    members: dict[str, list[int]] = {}
    for i, obj in enumerate(objects):
        members.setdefault(obj.category, []).append(i)
    return {
        c: _Group(
            np.array(ids),
            np.array([objects[i].area for i in ids], dtype=np.float64),
            np.array([objects[i].cx for i in ids]),
            np.array([objects[i].cy for i in ids]),
            np.array([objects[i].colour for i in ids]),
            np.array([objects[i].cell for i in ids]),
        )
        for c, ids in members.items()
    }


def _referring(
    rng: np.random.Generator, objects: Sequence[SceneObject], index: int,
    groups: dict[str, _Group], fallback: bool = False,
) -> list[str]:  # fmt: skip
    """Up to two expressions that single out ``objects[index]``; empty when none is unique.

    An attribute set (colour, 3×3 cell, size word) refers to the object when every other
    object of its category differs in one of them (size words need a 1.4× area margin);
    superlatives need a 1.3× margin and extremes a 2-pixel gap, unless ``fallback`` (used when
    no object of the image could be referred to otherwise). Relations use anchors whose
    category occurs once in the image.
    """
    obj = objects[index]
    c = obj.category
    group = groups[c]
    keep = group.members != index
    positional = c not in _NO_POSITION
    found: list[str] = []
    if not keep.any():
        found.append(f"the {c}")
        found.append(f"the {obj.colour} {c}")
        if positional:
            found.append(f"the {c} {POSITION_PHRASES[obj.cell]}")
    else:
        area, cx, cy = group.area[keep], group.cx[keep], group.cy[keep]
        if obj.size == "small":
            size_differs = area >= 1.4 * obj.area
        elif obj.size == "large":
            size_differs = 1.4 * area <= obj.area
        else:
            size_differs = np.zeros(len(area), bool)
        differs = {
            "colour": group.colour[keep] != obj.colour,
            "cell": group.cell[keep] != obj.cell,
            "size": size_differs,
        }
        useful = {a: bool(d.any()) for a, d in differs.items()}  # else the word is redundant
        useful["cell"] &= positional
        for attributes in _ATTRIBUTE_SETS:
            if not all(useful[a] for a in attributes):
                continue
            if np.logical_or.reduce([differs[a] for a in attributes]).all():
                adjectives = [
                    w for a, w in (("size", obj.size), ("colour", obj.colour)) if a in attributes
                ]
                text = " ".join(["the", *(w for w in adjectives if w), c])
                cell = "cell" in attributes
                found.append(f"{text} {POSITION_PHRASES[obj.cell]}" if cell else text)
        margin, gap = (1.0, 0.0) if fallback else (1.3, 2.0)
        if obj.area >= margin * area.max() and obj.area > area.max():
            found.append(f"the {pick(rng, SUPERLATIVES['largest'])} {c}")
        if obj.area * margin <= area.min() and obj.area < area.min():
            found.append(f"the {SUPERLATIVES['smallest'][0]} {c}")
        extremes = {
            "left": obj.cx + gap < cx.min(),
            "right": obj.cx - gap > cx.max(),
            "top": obj.cy + gap < cy.min(),
            "bottom": obj.cy - gap > cy.max(),
        }
        found.extend(f"the {EXTREMES[k]} {c}" for k, ok in extremes.items() if ok)
        for other, anchors in groups.items():
            if other == c or len(anchors.members) != 1:
                continue
            anchor = objects[int(anchors.members[0])]
            x0, y0, w, h = anchor.bbox
            tests = {  # (the object is clearly there, some other object is roughly there)
                "left": (obj.cx < x0, cx < anchor.cx),
                "right": (obj.cx > x0 + w, cx > anchor.cx),
                "above": (obj.cy < y0, cy < anchor.cy),
                "below": (obj.cy > y0 + h, cy > anchor.cy),
            }
            for direction, (clearly, roughly) in tests.items():
                if clearly and not roughly.any():
                    found.append(f"the {c} {RELATIONS[direction]} the {other}")
            d = math.hypot(obj.cx - anchor.cx, obj.cy - anchor.cy)
            if (1.5 * d < np.hypot(cx - anchor.cx, cy - anchor.cy)).all():
                found.append(f"the {c} {RELATIONS['near']} the {other}")
    unique = list(dict.fromkeys(found))
    order = rng.permutation(len(unique)).tolist()
    return [unique[i] for i in order[:2]]
