"""Config groups are built in one place (zoo.groups.as_group): from an instance, a dict as a
checkpoint stores it, or None; a wrong key names the group, the key and the fields."""

from __future__ import annotations

import pytest

from zoo.encoders.flava import FlavaSpec
from zoo.encoders.vision import VisionSpec
from zoo.groups import as_group
from zoo.models import FUSE, Aquila, GeoPix
from zoo.models.aquila import SFIConfig
from zoo.models.flavars_objectives import Objectives


def test_as_group_builds_from_an_instance_a_dict_or_none():
    given = SFIConfig(grid_size=3)
    assert as_group(SFIConfig, given) is given
    assert as_group(SFIConfig, {"grid_size": 3}) == given
    assert as_group(SFIConfig, None) == SFIConfig()


def test_an_unknown_key_names_the_group_the_key_and_the_fields():
    with pytest.raises(ValueError, match=r"sfi: unknown keys \['grid'\].*'grid_size'"):
        as_group(SFIConfig, {"grid": 4}, "sfi")
    with pytest.raises(TypeError, match="sfi: expected a SFIConfig"):
        as_group(SFIConfig, 4, "sfi")


@pytest.mark.parametrize(
    ("convert", "name"),
    [
        (VisionSpec.of, "vision"),
        (FlavaSpec.of, "flava"),
        (Objectives.of, "objectives"),
    ],
)
def test_every_spec_goes_through_the_one_conversion(convert, name):
    with pytest.raises(ValueError, match=rf"{name}: unknown keys \['typo'\]"):
        convert({"typo": 1})


@pytest.mark.parametrize(
    ("family", "group", "typo"),
    [(Aquila, "sfi", "grid"), (FUSE, "views", "canvas"), (GeoPix, "memory", "size")],
)
def test_a_generator_names_its_group_in_the_error(dm, family, group, typo):
    with pytest.raises(ValueError, match=rf"{group}: unknown keys \['{typo}'\]"):
        family(tokenizer=dm.tokenizer, class_names=dm.class_names, **{group: {typo: 1}})
