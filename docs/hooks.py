"""MkDocs hook: the notebooks under ``notebooks/`` as pages of the site.

The notebooks stay beside the code, where Jupyter and the tests open them; this hook adds them
(and their README) to the site's files before mkdocs-jupyter turns each ``.ipynb`` into a page.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]


@event_priority(100)  # before mkdocs-jupyter's on_files (default priority 0)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add ``notebooks/*.ipynb`` and ``notebooks/README.md`` to the site's files.

    Args:
        files: The files MkDocs found under ``docs/``.
        config: The site's configuration.

    Returns:
        The same files with the notebooks added, under ``notebooks/`` in the site.
    """
    for path in sorted((ROOT / "notebooks").iterdir()):
        if path.suffix in (".ipynb", ".md"):
            files.append(
                File(
                    f"notebooks/{path.name}",
                    src_dir=str(ROOT),
                    dest_dir=config.site_dir,
                    use_directory_urls=config.use_directory_urls,
                )
            )
    return files
