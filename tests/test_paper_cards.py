"""Paper cards (configs/papers/*.yaml): every paper config resolves to the numbers its card
lists, so a number taken from a paper or the authors' code cannot drift silently.

Each card maps a paper config to the configs it is composed of and to its numbers, keyed by the
dotted path of the config that ``zoo fit --config ... --print_config`` resolves (the real CLI
parser; nothing is instantiated, so the 7B models are never loaded). ``global_batch`` is the
product of ``trainer.num_nodes``, ``trainer.devices``, the data's ``batch_size`` and
``trainer.accumulate_grad_batches``. A stage's card ``inherit``-s its base stage's numbers.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from zoo.main import main

ROOT = Path(__file__).parents[1]
CARDS = ROOT / "configs" / "papers"
#: The paper configs: every one needs a card.
PAPER_CONFIGS = sorted(
    str(p.relative_to(ROOT))
    for pattern in (
        "flavars/*.yaml",
        "aquila/stage*.yaml",
        "fuse/stage*.yaml",
        "geopix/stage*.yaml",
    )
    for p in (ROOT / "configs").glob(pattern)
)
STATUSES = {"stated", "code", "assumed", "unverified-summary"}
ENTRY_FIELDS = {"value", "status", "source"}
_RESOLVED: dict[tuple[str, ...], dict[str, Any]] = {}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["zoo"])


def load_cards() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Each paper config's card entry (``compose``, ``numbers``, ``inherit``) and its file."""
    cards: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(CARDS.glob("*.yaml")):
        for config, entry in yaml.safe_load(path.read_text())["configs"].items():
            assert config not in cards, (
                f"{config} has cards in {cards[config][0].name} and {path.name}"
            )
            cards[config] = (path, entry)
    return cards


def card_numbers(cards: dict[str, tuple[Path, dict[str, Any]]], config: str) -> dict[str, dict]:
    """A config's numbers, its base stage's (``inherit``) first, its own over them."""
    _, entry = cards[config]
    base = card_numbers(cards, entry["inherit"]) if entry.get("inherit") else {}
    return {**base, **entry["numbers"]}


def resolve(compose: list[str]) -> dict[str, Any]:
    """The config ``zoo fit --config a --config b ... --print_config`` prints (cached)."""
    key = tuple(str(Path(c).resolve()) for c in compose)
    if key not in _RESOLVED:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            main(["fit", *(a for c in key for a in ("--config", c)), "--print_config"])
        assert exit_.value.code in (0, None), f"{compose} does not resolve"
        _RESOLVED[key] = yaml.safe_load(out.getvalue())
    return _RESOLVED[key]


def lookup(resolved: dict[str, Any], key: str) -> Any:
    """The resolved value at a dotted key (or ``global_batch``); KeyError names the missing part."""
    if key == "global_batch":
        trainer = resolved["trainer"]
        return (
            (trainer.get("num_nodes") or 1)
            * trainer["devices"]
            * resolved["data"]["init_args"]["batch_size"]
            * (trainer.get("accumulate_grad_batches") or 1)
        )
    node: Any = resolved
    for depth, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(
                f"{key!r}: no {'.'.join(key.split('.')[: depth + 1])!r} in the resolved config"
            )
        node = node[part]
    return node


def same(expected: Any, actual: Any) -> bool:
    """Equal values: numbers to 1e-9 relative, lists element-wise, booleans only as booleans."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, list) and isinstance(actual, list):
        return len(expected) == len(actual) and all(map(same, expected, actual))
    return expected == actual


def drifts(numbers: dict[str, dict], resolved: dict[str, Any]) -> list[str]:
    """One line per card entry the resolved config does not match (or does not have)."""
    lines = []
    for key, entry in numbers.items():
        try:
            actual = lookup(resolved, key)
        except KeyError as missing:
            lines.append(f"{missing.args[0]} (the card says {entry['value']!r}, {entry['source']})")
            continue
        if not same(entry["value"], actual):
            lines.append(
                f"{key}: config {actual!r}, card {entry['value']!r} ({entry['status']}: {entry['source']})"
            )
    return lines


def test_every_paper_config_has_a_card():
    cards = load_cards()
    assert len(PAPER_CONFIGS) == 8
    missing = [c for c in PAPER_CONFIGS if c not in cards]
    assert not missing, f"paper configs without a card in configs/papers/: {missing}"
    for config, (path, entry) in cards.items():
        assert (ROOT / config).is_file(), f"{path.name}: {config} does not exist"
        assert entry["compose"][-1] == config, f"{path.name}: {config}'s compose must end with it"
        assert not entry.get("inherit") or entry["inherit"] in cards, (
            f"{path.name}: {config}'s inherit"
        )


def test_every_card_entry_has_a_value_a_status_and_a_source():
    for config, (path, entry) in load_cards().items():
        assert entry["numbers"], f"{path.name}: {config} lists no numbers"
        for key, number in entry["numbers"].items():
            where = f"{path.name}: {config}: {key}"
            assert isinstance(number, dict) and set(number) == ENTRY_FIELDS, f"{where}: {number}"
            assert number["status"] in STATUSES, f"{where}: status {number['status']!r}"
            assert isinstance(number["source"], str) and number["source"].strip(), (
                f"{where}: source"
            )


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_config_matches_its_card(config):
    cards = load_cards()
    path, entry = cards[config]
    lines = drifts(card_numbers(cards, config), resolve(entry["compose"]))
    assert not lines, f"{config} has drifted from {path.relative_to(ROOT)}:\n" + "\n".join(lines)


def _scratch(tmp_path: Path, config: str, edit: tuple[str, str]) -> str:
    """A copy of ``config`` with one line edited (the planted drift)."""
    text = (ROOT / config).read_text()
    assert text.count(edit[0]) == 1, f"{edit[0]!r} is not once in {config}"
    copy = tmp_path / Path(config).name
    copy.write_text(text.replace(*edit))
    return str(copy)


@pytest.mark.parametrize(
    ("config", "edit", "key"),
    [
        (
            "configs/aquila/stage2.yaml",
            ("lora_rank: 64", "lora_rank: 32"),
            "model.init_args.stage.lora_rank",
        ),
        (
            "configs/fuse/stage1.yaml",
            ("residual_init: 1.0", "residual_init: 0.0"),
            "model.init_args.inject.residual_init",
        ),
        (
            "configs/fuse/stage2.yaml",
            ("layers: [3, 5, 7]", "layers: [4, 6, 8]"),
            "model.init_args.inject.layers",
        ),
        (
            "configs/geopix/stage1.yaml",
            ("accumulate_grad_batches: 49", "accumulate_grad_batches: 48"),
            "global_batch",
        ),
    ],
)
def test_a_planted_drift_is_named(tmp_path, config, edit, key):
    """A number changed on a scratch copy of a paper config fails its card, naming the key."""
    cards = load_cards()
    _, entry = cards[config]
    compose = [_scratch(tmp_path, c, edit) if c == config else c for c in entry["compose"]]
    lines = drifts(card_numbers(cards, config), resolve(compose))
    assert any(line.startswith(f"{key}:") for line in lines), lines


def test_a_card_key_the_config_lacks_fails():
    """A card entry whose key the resolved config does not have (a renamed key) is a drift."""
    cards = load_cards()
    _, entry = cards["configs/fuse/stage1.yaml"]
    numbers = {"model.init_args.inject_layer": {"value": [1], "status": "code", "source": "x"}}
    (line,) = drifts(numbers, resolve(entry["compose"]))
    assert "no 'model.init_args.inject_layer'" in line
