"""The hallucination metrics equal counts made by hand on hand-written captions: CHAIR-i, CHAIR-s,
coverage, count / colour / position errors, POPE's probes and figures; the vocabulary matcher's
tricky cases (plural, multi-word, synonym, a substring that must not match, negation)."""

from __future__ import annotations

import math

import pytest

from zoo.data.embedded.scene_graph import COLOUR_RGB, OBJECT_CATEGORIES
from zoo.metrics.hallucination import (
    CHAIR,
    POPE,
    ObjectVocabulary,
    caption_claims,
    cell_of_point,
    parse_yes_no,
    plural_forms,
    pope_probes,
)
from zoo.metrics.hallucination_vocab import load_vocabulary

EMBEDDED = load_vocabulary("embedded")


def _obj(category: str, colour: str | None = None, cell: str | None = None) -> dict:
    return {"category": category, "colour": colour, "cell": cell}


def test_matcher_plural_multiword_synonym_and_no_substring() -> None:
    text = "Two large red Storage-Tanks, a planet and 3 boats; the carpark has no cars."
    _, mentions = EMBEDDED.mentions(text)
    # "Storage-Tanks": one multi-word plural mention (not also "tank"); "planet" is no plane,
    # "carpark" no car; "boats" is a ship (synonym, plural), "cars" a vehicle (negated, still).
    assert [m.cls for m in mentions] == ["storage tank", "ship", "vehicle"]
    assert EMBEDDED.mentioned("the planes, the aircraft and a plane") == {"plane"}
    assert EMBEDDED.mentioned("streets and trees") == {"road", "tree"}
    assert EMBEDDED.mentioned("a treehouse near the tanker") == set()
    # The longest form first where a shorter one ends at a word boundary too.
    farms = ObjectVocabulary({"storage tank": [], "tank farm": ["storage tank farm"]})
    assert [m.cls for m in farms.mentions("a storage tank farm and a storage tank")[1]] == [
        "tank farm",
        "storage tank",
    ]


def test_plural_rules() -> None:
    assert plural_forms("tank") == ["tanks"]
    assert plural_forms("storage tank") == ["storage tanks"]
    assert plural_forms("bus") == ["buses"]
    assert plural_forms("factory") == ["factories"]
    assert plural_forms("chimney") == ["chimneys"]
    assert plural_forms("aircraft") == []


def test_annotation_spellings_of_dior_and_isaid_and_bad_tables() -> None:
    dior, isaid = load_vocabulary("dior"), load_vocabulary("isaid")
    assert len(dior.classes) == 20 and len(isaid.classes) == 14  # iSAID's two vehicles merged
    assert dior.category("storagetank") == "storage tank"
    assert dior.category("groundtrackfield") == "ground track field"
    assert dior.category("Expressway-Service-area") == "expressway service area"
    assert isaid.category("Large_Vehicle") == isaid.category("Small_Vehicle") == "vehicle"
    assert isaid.category("Ground_Track_Field") == "ground track field"
    assert dior.mentioned("three storage tanks beside a ground track field") == {
        "storage tank",
        "ground track field",
    }
    with pytest.raises(KeyError, match="'helipad' is not in the object vocabulary 'dior'"):
        dior.category("helipad", "instances_test.json")
    with pytest.raises(ValueError, match="'tanks' names both"):
        ObjectVocabulary({"storage tank": ["tank"], "army tank": ["tanks"]})
    with pytest.raises(ValueError, match="needs 'classes'"):
        ObjectVocabulary.from_table({"colours": ["red"]})


def test_embedded_table_knows_every_category_and_colour_of_the_generator() -> None:
    assert set(OBJECT_CATEGORIES) == set(EMBEDDED.classes)
    assert set(COLOUR_RGB) == set(EMBEDDED.colours)


def test_claims_of_counts_colours_and_positions() -> None:
    claims = caption_claims(
        "A forest with 12 trees, two large red storage tanks and 1 road. "
        "The ship is at the bottom; a house in the centre.",
        EMBEDDED,
    )
    assert claims.counts == [("tree", 12), ("storage tank", 2), ("road", 1)]
    assert claims.colours == [("storage tank", "red")]
    assert claims.cells == [("ship", "bottom"), ("building", "center")]


CAPTIONS = [
    "two ships and a storage tank next to 2 buildings.",
    "there are no vehicles, only 4 trees and a road on the left.",
    "a blue plane in the center and a red house at the bottom.",
    "an aerial image of a desert.",
]
INSTANCES = [
    [_obj("ship", "red", "top left"), _obj("ship", "red", "top left"), _obj("storage tank", "white", "center")],
    [_obj("tree", "green", "bottom"), _obj("tree", "green", "bottom"), _obj("tree", "green", "bottom"),
     _obj("road", "grey", "left")],
    [_obj("plane", "white", "center"), _obj("building", "red", "top right"), _obj("field", "green", "bottom")],
    [],
]  # fmt: skip


def _expected_chair() -> dict[str, float]:
    # Caption 1 mentions {ship, storage tank, building}: building is absent (1 of 3); both
    #   present classes mentioned; "two ships" is right (2 ships); "2 buildings" is no count
    #   claim (no building: a CHAIR hallucination, not a count error).
    # Caption 2 mentions {vehicle, tree, road}: "no vehicles" still mentions vehicle, absent, as
    #   CHAIR counts it (1 of 3); both present classes mentioned; "4 trees" is wrong (3), "road on
    #   the left" right.
    # Caption 3 mentions {plane, building ("house")}: none absent; field not mentioned (2 of 3
    #   present); "blue plane" wrong (white), "red house" right; "plane in the center" right,
    #   "house at the bottom" wrong (top right).
    # Caption 4 mentions nothing; its image has nothing.
    return {
        "chair_i": 2 / 8,
        "chair_s": 2 / 4,
        "coverage": 6 / 7,
        "count_error": 1 / 2,
        "colour_error": 1 / 2,
        "position_error": 1 / 3,
        "mentions": 8,
        "captions": 4,
        "count_claims": 2,
        "colour_claims": 2,
        "position_claims": 3,
    }


def test_chair_and_attribute_errors_equal_the_hand_counts() -> None:
    metric = CHAIR(EMBEDDED)
    metric.update(CAPTIONS[:3], INSTANCES[:3])
    metric.update(CAPTIONS[3:], INSTANCES[3:])
    result = {k: float(v) for k, v in metric.compute().items()}
    assert result == pytest.approx(_expected_chair())
    # Each caption against its own image: shifted by one image, the figures change.
    shifted = CHAIR(EMBEDDED)
    shifted.update(CAPTIONS, INSTANCES[1:] + INSTANCES[:1])
    assert float(shifted.compute()["chair_i"]) != pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="2 captions but 1"):
        metric.update(CAPTIONS[:2], INSTANCES[:1])
    with pytest.raises(ValueError, match="no captions"):
        CHAIR(EMBEDDED).compute()
    empty = CHAIR(EMBEDDED)
    empty.update(["a desert"], [[]])
    assert math.isnan(float(empty.compute()["chair_i"]))  # nothing mentioned: no rate


def _chair_on_rank(rank: int) -> dict[str, float]:
    metric = CHAIR(EMBEDDED)
    metric.update(CAPTIONS[rank::2], INSTANCES[rank::2])
    return {k: float(v) for k, v in metric.compute().items()}


def test_chair_is_exact_over_ddp_ranks(on_two_ranks) -> None:
    for result in on_two_ranks(_chair_on_rank):
        assert result == pytest.approx(_expected_chair())


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("Yes, there is.", True),
        ("yes", True),
        ("No.", False),
        ("There isn't any.", False),
        ("there is not a ship", False),
        ("There is no ship, yes", False),
        ("a ship", None),
        ("", None),
        ("Nothing like that", False),
    ],
)
def test_yes_no_parsing(answer: str, said: bool | None) -> None:
    assert parse_yes_no(answer) is said


def test_pope_figures_equal_the_hand_counts() -> None:
    metric = POPE()
    metric.update(
        ["Yes, there is one.", "no", "a ship", "Yes.", "No, there isn't.", "There is not."],
        [True, True, True, False, False, False],
    )
    # TP 1, FN 1, one unparsed yes-probe (wrong), FP 1, TN 2.
    result = {k: float(v) for k, v in metric.compute().items()}
    assert result == pytest.approx(
        {
            "accuracy": 3 / 6,
            "precision": 1 / 2,
            "recall": 1 / 3,
            "f1": 2 / (2 + 1 + 1 + 1),
            "yes_ratio": 2 / 6,
            "unparsed": 1 / 6,
            "probes": 6,
        }
    )


PRESENT = [{"ship", "tree"}, {"road"}, {"building", "road", "tree"}, set(), set(OBJECT_CATEGORIES)]


def test_pope_popular_and_adversarial_negatives_by_hand() -> None:
    classes = list(OBJECT_CATEGORIES)

    def negatives(mode: str) -> list[list[str]]:
        probes = pope_probes(PRESENT, classes, mode, per_image=3, seed=0)  # type: ignore[arg-type]
        return [[p.cls for p in probes if p.image == i and not p.answer] for i in range(5)]

    # Frequencies: road 2, tree 2, building 1, ship 1, others 0; ties go to the class first
    # listed. Images 3 (nothing) and 4 (everything) have no probes.
    assert negatives("popular") == [
        ["road", "building"],
        ["tree"],
        ["ship", "vehicle", "storage tank"],
        [],
        [],
    ]
    # Co-occurrence with the image's classes: image 0 (ship, tree): building 1 (tree in image
    # 2), road 1; image 1 (road): building 1, tree 1; image 2: ship 1 (with tree in image 0).
    assert negatives("adversarial") == [
        ["building", "road"],
        ["building"],
        ["ship", "vehicle", "storage tank"],
        [],
        [],
    ]


def test_random_probes_are_balanced_seeded_and_right() -> None:
    classes = list(OBJECT_CATEGORIES)
    probes = pope_probes(PRESENT, classes, "random", per_image=3, seed=5)
    assert probes == pope_probes(PRESENT, classes, "random", per_image=3, seed=5)
    for i, present in enumerate(PRESENT):
        mine = [p for p in probes if p.image == i]
        yes = [p for p in mine if p.answer]
        assert len(yes) == len(mine) - len(yes) == min(3, len(present), 8 - len(present))
        assert all((p.cls in present) == p.answer for p in mine)
    with pytest.raises(ValueError, match="mode"):
        pope_probes(PRESENT, classes, "hard", seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not among the classes"):
        pope_probes([{"helipad"}], classes)


def test_cells_of_points() -> None:
    assert cell_of_point(0.5, 0.5, 64, 64) == "top left"
    assert cell_of_point(32, 32, 64, 64) == "center"
    assert cell_of_point(63.5, 10, 64, 48) == "top right"
    assert cell_of_point(10, 47, 64, 48) == "bottom left"
