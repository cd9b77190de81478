"""Griffe extension: the Sphinx roles of the zoo's docstrings as links of the API reference.

The docstrings cross-reference with Sphinx roles (``:class:`~zoo.layers.sfi.SpatialFeatureIntegration```,
``:meth:`stitch```), which Markdown would show as they are written. This extension rewrites each
role into an optional mkdocs-autorefs reference: a link where the object is rendered on the
site, plain code where it is not (a private helper, another library's object), never a warning.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``:role:`target```, ``:role:`~target``` (show the last component) or ``:role:`title <target>```.
ROLE = re.compile(
    r":(?:py:)?(?:func|class|meth|attr|data|mod|exc|obj|const):"
    r"`(?:(?P<title>[^`<]+?)\s*<(?P<explicit>[^`>]+)>|(?P<tilde>~?)(?P<target>[^`]+))`"
)


def _identifier(obj: griffe.Object, target: str) -> str:
    """The full path of a role's target, resolved in the scope of the documented object.

    Args:
        obj: The object whose docstring holds the role.
        target: The role's target, dotted or relative (``stitch``, ``Class.method``).

    Returns:
        The full dotted path, or ``target`` itself when it does not resolve.
    """
    target = target.removesuffix("()").lstrip(".")
    first, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(first)
    except (griffe.NameResolutionError, ValueError, KeyError):
        return target
    return f"{resolved}.{rest}" if rest else resolved


def rewrite(obj: griffe.Object, text: str) -> str:
    """A docstring with its Sphinx roles turned into optional autorefs.

    Args:
        obj: The object the docstring documents (the scope of relative targets).
        text: The docstring.

    Returns:
        The docstring with each role as ``<autoref identifier=... optional>``.
    """

    def replace(match: re.Match[str]) -> str:
        if match["explicit"]:
            target, title = match["explicit"], match["title"]
        else:
            target = match["target"]
            title = target.removesuffix("()").split(".")[-1] if match["tilde"] else target
        identifier = _identifier(obj, target)
        return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'

    return ROLE.sub(replace, text)


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring of a loaded package (see the module)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the docstrings of a package once it is loaded (names then resolve).

        Args:
            pkg: The loaded package.
            **kwargs: The loader's other arguments (unused).
        """
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None:
                obj.docstring.value = rewrite(obj, obj.docstring.value)
            stack += [m for m in obj.members.values() if not m.is_alias]
