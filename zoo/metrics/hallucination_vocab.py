"""The object vocabularies of the hallucination metrics, as data: one table per dataset.

A table is ``{"classes": {class: [other singular forms]}, "colours": [colour words]}``: the
class name and its forms (synonyms, multi-word phrases, the annotation file's spelling) all
name the class in a caption, their plurals too (added by rule,
:func:`~zoo.metrics.hallucination.plural_forms`); an annotation's category name is looked up
among the same forms, with ``_`` / ``-`` as spaces and, failing that, without spaces
(``storagetank``, ``Ground_Track_Field``). A form names one class only. A dataset of one's own:
write the same table as a YAML file and give its path as the protocol's ``vocabulary``
(docs/evaluation.md, "Hallucination vocabularies").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from zoo.metrics.hallucination import ObjectVocabulary

__all__ = ["VOCABULARIES", "load_vocabulary"]

#: The embedded dataset's object categories (:data:`zoo.data.embedded.OBJECT_CATEGORIES`) and
#: colours (:data:`zoo.data.embedded.scene_graph.COLOUR_RGB`).
EMBEDDED: dict[str, Any] = {
    "classes": {
        "building": ["house"],
        "road": ["street"],
        "tree": [],
        "vehicle": ["car", "truck"],
        "ship": ["boat", "vessel"],
        "storage tank": ["tank", "oil tank"],
        "plane": ["airplane", "aircraft"],
        "field": ["crop field"],
    },
    "colours": ["red", "white", "grey", "black", "blue", "green", "brown", "yellow", "orange"],
}

#: DIOR's 20 categories (Li et al. 2020), the annotation spellings as forms.
DIOR: dict[str, Any] = {
    "classes": {
        "airplane": ["plane", "aircraft", "airliner", "jet"],
        "airport": ["airfield", "aerodrome"],
        "baseball field": ["baseball diamond"],
        "basketball court": [],
        "bridge": [],
        "chimney": ["smokestack"],
        "dam": [],
        "expressway service area": ["service area", "rest area"],
        "expressway toll station": ["toll station", "toll gate", "tollgate"],
        "golf field": ["golf course"],
        "ground track field": ["track field", "running track", "athletics track"],
        "harbor": ["harbour", "dock"],
        "overpass": ["flyover"],
        "ship": ["boat", "vessel"],
        "stadium": [],
        "storage tank": ["tank", "oil tank"],
        "tennis court": [],
        "train station": ["railway station"],
        "vehicle": ["car", "truck", "bus", "van"],
        "windmill": ["wind turbine"],
    },
    "colours": [],
}

#: iSAID's 15 categories (Waqas Zamir et al. 2019); its large and small vehicles are one class
#: (captions rarely tell them apart), named by either spelling.
ISAID: dict[str, Any] = {
    "classes": {
        "plane": ["airplane", "aircraft", "airliner", "jet"],
        "ship": ["boat", "vessel"],
        "storage tank": ["tank", "oil tank"],
        "baseball diamond": ["baseball field"],
        "tennis court": [],
        "basketball court": [],
        "ground track field": ["track field", "running track", "athletics track"],
        "harbor": ["harbour", "dock"],
        "bridge": [],
        "vehicle": ["large vehicle", "small vehicle", "car", "truck", "bus", "van"],
        "helicopter": [],
        "roundabout": ["traffic circle"],
        "soccer ball field": ["soccer field", "football field"],
        "swimming pool": ["pool"],
    },
    "colours": [],
}

#: The built-in tables by name.
VOCABULARIES: dict[str, dict[str, Any]] = {"embedded": EMBEDDED, "dior": DIOR, "isaid": ISAID}


def load_vocabulary(name: str) -> ObjectVocabulary:
    """A built-in vocabulary by name, or a YAML table by path.

    Args:
        name: ``embedded``, ``dior``, ``isaid``, or the path of a YAML file holding a table
            (``classes: {class: [forms]}``, optional ``colours: [...]``).

    Returns:
        The vocabulary.

    Raises:
        FileNotFoundError: ``name`` is neither a built-in table nor an existing file.
    """
    if name in VOCABULARIES:
        return ObjectVocabulary.from_table(VOCABULARIES[name], name)
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary {name!r} is neither a built-in table {sorted(VOCABULARIES)} nor a YAML "
            "file: give one of those names or the path of a table (classes: {class: [forms]})"
        )
    return ObjectVocabulary.from_table(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
