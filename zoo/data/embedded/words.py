"""Words and templates: every text of the embedded dataset is built from these constants.

So :func:`vocabulary` lists every word without scanning generated files.
"""

from __future__ import annotations

import re

from zoo.data.embedded.geo import BANDS, HEMISPHERES, VEGETATION_WORDS
from zoo.data.embedded.scene_graph import (
    CELLS,
    COLOUR_RGB,
    MAX_OBJECTS,
    OBJECT_CATEGORIES,
    SCENE_CLASSES,
    SIZE_WORDS,
)

__all__ = ["LOCATION_QUESTION_TYPES", "QUESTION_TYPES", "plural", "tokenize", "vocabulary"]

QUESTION_TYPES: tuple[str, ...] = ("presence", "count", "position", "colour", "category")
"""Types of the generated VQA questions."""

LOCATION_QUESTION_TYPES: tuple[str, ...] = ("hemisphere", "band")
"""Types of the location questions (task ``location``): answers that depend on where the scene
is (its hemisphere, its latitude band), not on what it shows."""

SCENE_PHRASES = {  # noun phrase, with article where English wants one
    "residential": "a residential area",
    "industrial": "an industrial area",
    "farmland": "farmland",
    "forest": "a forest",
    "lake": "a lake",
    "airport": "an airport",
    "harbour": "a harbour",
    "desert": "a desert",
    "snow": "a snow covered landscape",
    "river": "a river",
}
GROUND_SENTENCES = {
    "residential": "Houses and streets fill the area.",
    "industrial": "The ground is mostly paved with concrete.",
    "farmland": "The land is divided into cultivated plots.",
    "forest": "Dense tree cover fills the scene.",
    "lake": "A large body of water covers part of the image.",
    "airport": "Paved runways and taxiways cross the scene.",
    "harbour": "The coast separates the water from the paved docks.",
    "desert": "Sand dunes cover the ground.",
    "snow": "The ground is covered with snow.",
    "river": "A river winds through the landscape.",
}
POSITION_PHRASES = {
    "top left": "in the top left",
    "top": "at the top",
    "top right": "in the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "in the bottom left",
    "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
SUPERLATIVES = {"largest": ("largest", "biggest"), "smallest": ("smallest",)}
EXTREMES = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "lowest"}
RELATIONS = {
    "left": "left of",
    "right": "right of",
    "above": "above",
    "below": "below",
    "near": "closest to",
}
JOINERS = (",", "and")
ARTICLES = ("a", "an")
ANSWERS_YES_NO = ("yes", "no")
IMAGE_TOKEN = "<image>"
PROMPT_CAPTION = "Describe the image briefly."
PROMPT_DESCRIPTION = "Describe the image in detail."

CAPTIONS_COUNTS = (
    "a satellite image of {np} with {counts}.",
    "an aerial image of {np} with {counts}.",
    "a remote sensing image of {np} showing {counts}.",
    "{np} with {counts}.",
    "{scene_a} scene with {counts}.",
    "an overhead view of {np} containing {counts}.",
)
CAPTIONS_PLAIN = (
    "a satellite image of {np}.",
    "an aerial view of {np}.",
    "{scene_a} scene seen from above.",
    "a remote sensing image of {np}.",
)
CAPTIONS_OBJECT = (
    "{obj_a} {pos} of {np}.",
    "a satellite image of {np} with {obj_a} {pos}.",
)
CAPTIONS_NO_SCENE = (
    "an aerial image with {counts}.",
    "a satellite image showing {counts}.",
)
DESC_OPENERS = (
    "This is a satellite image of {np}.",
    "The image shows {np} seen from above.",
    "An aerial photograph of {np}.",
)
DESC_VEGETATION = ("The vegetation looks {veg}.", "The plants in the area look {veg}.")
DESC_COUNTS = ("It contains {counts}.", "There are {counts} in the image.")
DESC_EMPTY = ("No distinct objects are visible.", "The scene contains no distinct objects.")
DESC_OBJECT = ("{obj_a} is {pos}.", "There is {obj_a} {pos}.")
DESC_LARGEST = ("The largest {c} is {colour}.",)
DESC_LOCATION = (
    "The image was taken in the {band} of the {hemi} hemisphere.",
    "The scene is located in the {hemi} hemisphere, in the {band}.",
)
Q_SCENE = (
    "what kind of scene is this?",
    "what type of area is shown in the image?",
    "what is the scene category of this image?",
)
Q_PRESENCE = ("is there {c_a} in the image?", "is there {c_a}?", "are there any {p}?")
Q_COUNT = (
    "how many {p} are there?",
    "how many {p} are in the image?",
    "what is the number of {p}?",
    "how many {p} can be seen?",
)
Q_POSITION = (
    "where is the {c}?",
    "where is the {c} located?",
    "in which part of the image is the {c}?",
)
Q_COLOUR = ("what colour is {ref}?", "what is the colour of {ref}?")
Q_OBJECT = ("what is the object {pos}?", "which object is {pos}?")
# Location questions: their words are the descriptions' (DESC_LOCATION), so the vocabulary and
# with it every model's word-level tokenizer stay as they were.
Q_HEMISPHERE = (
    "in which hemisphere was the image taken?",
    "which hemisphere is the scene located in?",
)
Q_BAND = ("in which latitudes was the image taken?", "which latitudes is the scene located in?")
REF_TEMPLATES = (
    "the {c}",
    "the {adj} {c}",
    "the {adj} {c} {pos}",
    "the {c} {pos}",
    "the {sup} {c}",
    "the {ext} {c}",
    "the {c} {rel} the {anchor}",
)

_TOKEN = re.compile(r"\w+|[^\w\s]")
_FIELD = re.compile(r"\{\w*\}")


def tokenize(text: str) -> list[str]:
    """Lower-case words and single punctuation characters (BERT basic pre-tokenization).

    Args:
        text: the text to split.

    Returns:
        The tokens in order.
    """
    return _TOKEN.findall(text.lower())


def vocabulary() -> list[str]:
    """Every token any generated text can contain, sorted.

    Tokens are lower-case words and punctuation characters, split as a BERT basic tokenizer
    does; digit strings (counts ``0..MAX_OBJECTS``) are words. The list is built from the
    template word lists, not by scanning generated files; it also covers the LLaVA prompts
    (``<image>`` tokenizes to ``<``, ``image``, ``>``).

    Returns:
        The sorted tokens.
    """
    texts: list[str] = [
        *SCENE_CLASSES,
        *OBJECT_CATEGORIES,
        *(plural(c) for c in OBJECT_CATEGORIES),
        *QUESTION_TYPES,
        *SCENE_PHRASES.values(),
        *GROUND_SENTENCES.values(),
        *COLOUR_RGB,
        *CELLS,
        *POSITION_PHRASES.values(),
        *SIZE_WORDS,
        *(w for words in SUPERLATIVES.values() for w in words),
        *EXTREMES.values(),
        *RELATIONS.values(),
        *HEMISPHERES,
        *BANDS,
        *VEGETATION_WORDS,
        *JOINERS,
        *ARTICLES,
        *ANSWERS_YES_NO,
        IMAGE_TOKEN,
        PROMPT_CAPTION,
        PROMPT_DESCRIPTION,
        *CAPTIONS_COUNTS,
        *CAPTIONS_PLAIN,
        *CAPTIONS_OBJECT,
        *CAPTIONS_NO_SCENE,
        *DESC_OPENERS,
        *DESC_VEGETATION,
        *DESC_COUNTS,
        *DESC_EMPTY,
        *DESC_OBJECT,
        *DESC_LARGEST,
        *DESC_LOCATION,
        *Q_SCENE,
        *Q_PRESENCE,
        *Q_COUNT,
        *Q_POSITION,
        *Q_COLOUR,
        *Q_OBJECT,
        *Q_HEMISPHERE,
        *Q_BAND,
        *REF_TEMPLATES,
    ]
    words = {w for text in texts for w in tokenize(_FIELD.sub(" ", text))}
    words.update(str(n) for n in range(MAX_OBJECTS + 1))
    return sorted(words)


def plural(category: str) -> str:
    """The plural of an object category.

    Args:
        category: an object category.

    Returns:
        The category with an ``s``.
    """
    return category + "s"
