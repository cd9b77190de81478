"""The house rules of docs/architecture.md, checked: no import circle, the layering (models
never import the data stack's torchgeo side), nothing outside the repo."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """zoo modules imported anywhere in ``path``: a lazy import inside a function still closes a
    circle (it only hides it until that function runs)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from zoo.a import b`` depends on zoo.a.b if that is a module, else on zoo.a.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in modules
                else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _module_imports(path, modules) - {name} for name, path in files.items()}


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


def test_no_import_circle_among_the_package_modules():
    graph = import_graph()
    assert "zoo.layers.mask_decoder" in graph and "zoo.io" in graph
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


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
