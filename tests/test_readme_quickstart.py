"""README's "Python quickstart" runs as written (issue 23): after tiny fits of FLAVARS, Aquila
and GeoPix into the run folders the default configs name, its code blocks run verbatim, one
after another in one namespace, in a fresh folder."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import torch
import yaml

from zoo.main import main

ROOT = Path(__file__).parents[1]
README = ROOT / "README.md"


def quickstart_blocks() -> dict[str, str]:
    """The quickstart's Python blocks, by the name of the comment above each."""
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"<!-- quickstart: (\w+) -->\n```python\n(.*?)```", text, flags=re.S)
    return dict(found)


def test_the_quickstart_has_its_blocks():
    assert set(quickstart_blocks()) == {"flavars", "generators", "plot"}


def _tiny_fit(family: str, folder: Path) -> None:
    """``zoo fit --config configs/<family>.yaml``, two steps on a few embedded samples, into the
    config's own run folder (relative to the working directory, as README's commands)."""
    override = folder / f"{family}-tiny.yaml"
    override.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "max_epochs": 1,
                    "limit_train_batches": 2,
                    "limit_val_batches": 1,
                    "enable_progress_bar": False,
                },
                "data": {
                    "init_args": {"batch_size": 4, "splits": {"train": 8, "val": 4, "test": 4}}
                },
            }
        )
    )
    main(["fit", "--config", str(ROOT / "configs" / f"{family}.yaml"), "--config", str(override)])


def test_readme_quickstart_runs_as_written(tmp_path, monkeypatch):
    import matplotlib
    import wandb

    matplotlib.use("Agg")
    monkeypatch.setattr(sys, "argv", ["zoo"])
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    for family in ("flavars", "aquila", "geopix"):
        _tiny_fit(family, tmp_path)
        wandb.finish()
    namespace: dict = {}
    for name, code in quickstart_blocks().items():
        exec(compile(code, f"README.md quickstart {name}", "exec"), namespace)
    assert namespace["image_embeddings"].shape[0] == 4
    probabilities = namespace["probabilities"]  # FLAVARS' (``model`` is GeoPix by now)
    assert probabilities.shape[0] == 4
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(4))
    assert (tmp_path / "geopix_masks.png").stat().st_size > 0
    masks = namespace["result"].masks
    assert tuple(masks.shape[-2:]) == namespace["images"][0].size[::-1]
