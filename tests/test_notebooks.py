"""The notebooks under notebooks/: saved without outputs, and each runs top to bottom.

Running one trains a family for a few steps on a tiny embedded dataset
(``ZOO_NOTEBOOK_QUICK=1``) in a fresh kernel; together they take a few minutes on two CPU
cores, so they are marked slow (the output check is not).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_four_notebooks_saved_without_outputs():
    assert len(ALL) >= 4
    readme = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for path in ALL:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [c for c in notebook.cells if c.cell_type == "code"]
        assert code, path.name
        dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
        assert not dirty, (
            f"{path.name}: code cells {dirty} keep outputs; clear them before committing"
        )
        assert path.name in readme, f"notebooks/README.md does not link {path.name}"


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("ZOO_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("ZOO_NOTEBOOK_WORK", str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(NOTEBOOKS.parent), os.environ.get("PYTHONPATH", "")])
    )
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    ).execute()
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    errors = [
        o
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
