"""Evaluation configs: YAML read and checked by jsonargparse, built only when they run.

An evaluation config names one protocol class (:mod:`zoo.evaluation.protocols`) and its
arguments::

    class_path: zoo.evaluation.KNN        # or the short name, KNN
    init_args:
      name: EuroSAT k-NN                  # the row label (default: the file's name)
      data:                               # any zoo datamodule, as in a training config
        class_path: zoo.data.scenes.EuroSATScenesDataModule
        init_args: {root: data/eurosat, batch_size: 64}
      k: 20                               # the protocol's own settings
      paper: {FLAVARS: {knn_acc: 92.1}}   # published numbers (percent), flat or per model class
      source: FLAVARS (arXiv 2501.08490), Table 2

A suite lists evaluation configs, by path relative to the suite or inline::

    evaluations: [../eurosat_knn.yaml, ../eurosat_linear_probe.yaml]

A suite may also name ``variants``: the runs an ablation compares, each a column of
``zoo compare`` (:mod:`zoo.evaluation.compare`), its run configs relative to the suite::

    variants:
      - {name: FLAVARS +LE, config: [../../flavars/skyscript_vitb16.yaml]}
      - {name: FLAVARS, config: [../../flavars/skyscript_vitb16.yaml,
                                 ../../flavars/skyscript_vitb16_no_location.yaml]}

jsonargparse checks every key against the protocol's and the datamodule's constructors when a
config is read, so a misspelt key fails at once with jsonargparse's own message, prefixed with
the file. The datamodule is built when its evaluation runs, at the model's image size unless
the config sets one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser, Namespace

from zoo.errors import rename_hints
from zoo.evaluation.base import Evaluation, check_model, paper_numbers
from zoo.evaluation.geo_shift import expand_regions
from zoo.io import read_yaml

__all__ = ["EvaluationConfig", "Variant", "load_evaluations", "load_variants"]

_KEY = "evaluation"


@cache
def _evaluation_parser() -> ArgumentParser:
    import zoo.evaluation.protocols  # noqa: F401  (the protocols' short names)
    import zoo.main  # noqa: F401  (the datamodules' short names)

    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(f"--{_KEY}", type=Evaluation, required=True)
    return parser


@dataclass
class Variant:
    """One run of an ablation suite: a column of ``zoo compare``.

    Attributes:
        name: the column's title (and ``--ckpt_path NAME=PATH``'s key).
        config: the run's config files, composed left to right (relative to the suite).
        paper_row: the row of the evaluations' ``paper:`` numbers beside it (default: ``name``).
    """

    name: str
    config: list[str] = field(default_factory=list)
    paper_row: str | None = None


@cache
def _suite_parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--evaluations", type=list[str | dict[str, Any]], required=True)
    parser.add_argument("--name", type=str | None, default=None)
    parser.add_argument("--variants", type=list[Variant] | None, default=None)
    return parser


def _parse(parser: ArgumentParser, spec: Any, path: str) -> Namespace:
    try:
        return parser.parse_object(spec)
    except ArgumentError as error:
        hints = "".join(f"\n{h}" for h in rename_hints(str(error), "init_args."))
        raise ValueError(f"{path}: {error}{_accepted(spec.get(_KEY))}{hints}") from error


def _accepted(spec: Any) -> str:
    """For an evaluation whose class resolves but whose ``init_args`` hold keys it does not
    take: the keys it does take, as jsonargparse reads them from the class."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("init_args"), Mapping):
        return ""
    name = str(spec.get("class_path", "")).rpartition(".")[2]
    classes = [Evaluation]
    while classes and classes[0].__name__ != name:
        classes += classes.pop(0).__subclasses__()
    if not classes:
        return ""
    parser = ArgumentParser()
    parser.add_class_arguments(classes[0], "init_args")
    taken = list(vars(parser.get_defaults().init_args))
    if set(spec["init_args"]) <= set(taken):
        return ""
    return f"\n{name} takes: {', '.join(taken)}"


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


class EvaluationConfig:
    """One evaluation as its config gives it: checked on construction, built by :meth:`build`.

    Args:
        spec: ``{"class_path": ..., "init_args": {...}}`` as in the YAML.
        path: where it was read from (error messages and the results table name it).

    Raises:
        ValueError: jsonargparse's message for the first key that does not fit, after the path.
    """

    def __init__(self, spec: Mapping[str, Any], path: str | Path = "<inline>") -> None:
        self.path = str(path)
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"{path}: an evaluation config is a mapping (class_path, init_args), "
                f"got {type(spec).__name__}"
            )
        self.spec = copy.deepcopy(dict(spec))
        config = _parse(_evaluation_parser(), {_KEY: self.spec}, self.path)[_KEY]
        module, _, name = config.class_path.rpartition(".")
        #: The protocol class.
        self.cls: type[Evaluation] = getattr(import_module(module), name)
        self._data = config.init_args.data
        self.name: str = config.init_args.name or Path(self.path).stem
        self.paper: dict[str, Any] = config.init_args.paper or {}
        self.source: str = config.init_args.source

    @property
    def protocol(self) -> str:
        """The protocol's name in the results table."""
        return self.cls.protocol

    def paper_numbers(self, model: str) -> dict[str, float]:
        """The published numbers for ``model`` (a class name)."""
        return paper_numbers(self.paper, model)

    def check_model(self, model: Any) -> None:
        """Raise :class:`~zoo.evaluation.base.CapabilityError` if ``model`` lacks what the
        protocol needs (before anything is built)."""
        check_model(self.cls, self.name, model)

    def with_args(self, **init_args: Any) -> EvaluationConfig:
        """A copy with ``init_args`` merged in (mappings key by key), checked again::

        config.with_args(data={"init_args": {"root": "tests/data/eurosat"}}, k=5)
        """
        spec = copy.deepcopy(self.spec)
        _merge(spec.setdefault("init_args", {}), init_args)
        return EvaluationConfig(spec, self.path)

    def build(self, image_size: int | None = None) -> Evaluation:
        """The protocol object and its datamodule; ``image_size`` goes to the datamodule when it
        takes one and the config does not set it."""
        spec = copy.deepcopy(self.spec)
        init_args = spec.setdefault("init_args", {})
        init_args.setdefault("name", self.name)
        data = init_args["data"]
        if isinstance(data, str):  # data: EmbeddedDataModule
            data = init_args["data"] = {"class_path": data}
        data_args = data.setdefault("init_args", {})
        if image_size is not None and "image_size" in self._data.init_args:
            data_args.setdefault("image_size", image_size)
        parser = _evaluation_parser()
        return parser.instantiate(_parse(parser, {_KEY: spec}, self.path))[_KEY]

    def __repr__(self) -> str:
        return f"EvaluationConfig({self.name!r}, {self.cls.__name__}, path={self.path!r})"


def _read(path: Path) -> Any:
    return read_yaml(path, "evaluation config")


def load_evaluations(paths: Iterable[str | Path]) -> list[EvaluationConfig]:
    """Read evaluation configs and suites (expanded in order), every one checked; a config whose
    data has ``geo_split.test_on: both`` becomes its in-region and held-out evaluations
    (:func:`~zoo.evaluation.geo_shift.expand_regions`)."""
    out: list[EvaluationConfig] = []
    for path in map(Path, paths):
        spec = _read(path)
        if not (isinstance(spec, Mapping) and "evaluations" in spec):
            out += expand_regions(EvaluationConfig(spec or {}, path))
            continue
        suite = _parse(_suite_parser(), spec, str(path))
        for i, item in enumerate(suite.evaluations):
            if isinstance(item, str):
                out += load_evaluations([path.parent / item])
            else:
                out += expand_regions(EvaluationConfig(item, f"{path} (evaluations[{i}])"))
    return out


def load_variants(path: str | Path) -> list[Variant]:
    """The ``variants`` of a suite, their config paths resolved against the suite's folder.

    Raises:
        ValueError: the suite names no variants, two share a name, one has no config, or a
            config file does not exist (each naming the suite).
    """
    path = Path(path)
    spec = _read(path)
    if not (isinstance(spec, Mapping) and spec.get("variants")):
        raise ValueError(f"{path}: names no variants (a list of name + config, one per column)")
    variants = _parse(_suite_parser(), spec, str(path)).variants
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: variant names must differ, got {names}")
    out = []
    for v in variants:
        if not v.config:
            raise ValueError(f"{path}: variant {v.name!r} names no config")
        configs = [str(path.parent / c) for c in v.config]
        missing = [c for c in configs if not Path(c).is_file()]
        if missing:
            raise ValueError(f"{path}: variant {v.name!r}: config {missing[0]} does not exist")
        out.append(Variant(v.name, configs, v.paper_row))
    return out
