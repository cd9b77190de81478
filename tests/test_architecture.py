"""The house rules of docs/architecture.md, checked: no import circle (package, bench and tests), the layering (models
never import the data stack's torchgeo side), nothing outside the repo."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"
#: The folders whose modules the import graph holds: the package, the bench, the tests.
SOURCES = ("zoo", "bench", "tests")
#: Folders of scripts that put their own folder on ``sys.path`` (``python bench/x.py`` does),
#: so that their modules import one another by top-level name (``from timing import Pair``).
SCRIPT_FOLDERS = ("bench",)


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    """The module of ``modules`` that importing the dotted ``name`` runs last: ``name`` itself,
    else its longest prefix that is one (``zoo.a.f`` for a function ``f`` is ``zoo.a``), else a
    script beside the bench's (``timing`` is ``bench.timing``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if (prefix := ".".join(parts[:end])) in modules:
            return prefix
    for folder in SCRIPT_FOLDERS:
        if (beside := f"{folder}.{name}") in modules or (
            beside := f"{folder}.{parts[0]}"
        ) in modules:
            return beside
    return None


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names one import statement (or ``importlib.import_module("...")`` with a
    literal name) imports; relative imports made absolute against ``module``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        # ``from zoo.a import b`` depends on zoo.a.b if that is a module, else on zoo.a.
        return [f"{base}.{alias.name}" for alias in node.names]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def _module_imports(path: Path, modules: set[str], module: str = "") -> set[str]:
    """Modules of ``modules`` imported anywhere in ``path``: a lazy import inside a function
    still closes a circle (it only hides it until that function runs).

    Args:
        path: the source file.
        modules: every module of the graph.
        module: ``path``'s module name (resolves relative imports).

    Returns:
        The modules ``path`` imports.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        for name in _imported_names(node, module, is_package):
            if (target := _resolve(name, modules)) is not None:
                found.add(target)
    return found


def import_graph(root: Path = ROOT, folders: tuple[str, ...] = SOURCES) -> dict[str, set[str]]:
    """Which module imports which, over every ``.py`` file under ``folders`` of ``root``.

    Args:
        root: the repository.
        folders: the folders read (the package, the bench, the tests).

    Returns:
        Each module's name mapped to the modules of the graph it imports.
    """
    files = {
        _module_name(p, root): p
        for folder in folders
        for p in sorted((root / folder).rglob("*.py"))
    }
    modules = set(files)
    return {name: _module_imports(path, modules, name) - {name} for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_anywhere_in_the_repository():
    graph = import_graph()
    assert "zoo.layers.mask_decoder" in graph and "zoo.io" in graph
    assert "bench.side_by_side" in graph and "tests.test_architecture" in graph
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


def test_the_graph_reads_the_bench_and_the_tests():
    """The bench's scripts import one another by top-level name (their folder on sys.path):
    the graph sees those edges, and the command's pairs import the measuring library only."""
    graph = import_graph()
    assert "bench.timing" in graph["bench.side_by_side"]
    assert "bench.side_by_side_models" in graph["bench.side_by_side"]
    assert graph["bench.side_by_side_models"] & {"bench.timing", "bench.side_by_side"} == {
        "bench.timing"
    }
    assert not {m for m in graph["bench.timing"] if m.startswith("bench.")}
    assert "zoo.layers.sfi" in graph["bench.sfi_vs_loop"]
    assert "bench.memory_plan" in graph["tests.bench.test_memory_plan"]
    assert "tests.test_bench" in graph["tests.bench.test_side_by_side_flavars"]
    assert "bench.side_by_side" in graph["tests.test_bench"]  # importlib.import_module("...")


def test_cycle_finder_finds_a_planted_circle_between_bench_scripts(tmp_path):
    """Two scripts of a bench-like folder that import each other by top-level name, as
    side_by_side and side_by_side_models did, are a circle; a relative import is read too."""
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "command.py").write_text("def main():\n    from pairs import build\n")
    (tmp_path / "bench" / "pairs.py").write_text("from command import main\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from .b import f\n")
    (tmp_path / "pkg" / "b.py").write_text("from pkg import a\n")
    graph = import_graph(tmp_path, ("bench", "pkg"))
    assert graph["bench.command"] == {"bench.pairs"} and graph["bench.pairs"] == {"bench.command"}
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert find_cycle(graph) == ["bench.command", "bench.pairs", "bench.command"]
    del graph["bench.command"], graph["bench.pairs"]
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_models_do_not_import_the_data_stack():
    graph = import_graph()
    assert "zoo.data.batch" in graph["zoo.models.flavars"]  # the graph sees model->data edges
    for module, imports in graph.items():
        if module.startswith("zoo.models") or module.startswith("zoo.layers"):
            data = {m for m in imports if m.startswith("zoo.data") and m != "zoo.data.batch"}
            assert not data, f"{module} imports {data}: models read batches, not files"


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    suffixes = {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg", ""}
    return [ROOT / f for f in out.splitlines() if Path(f).suffix in suffixes]


#: Paths of the workspace the zoo was first designed in, which a clone does not have (built
#: from parts so that this file does not name them itself).
OUTSIDE = ("/".join(["..", "shared"]), "DESIGN" + ".md")


def test_nothing_points_outside_the_repository():
    offenders = []
    for path in _tracked_text_files():
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        if any(marker in text for marker in OUTSIDE):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"these files point outside the repository: {offenders}"
    assert (ROOT / "docs" / "architecture.md").is_file()
    assert "docs/architecture.md" in (ROOT / "README.md").read_text(encoding="utf-8")
