"""Griffe extension for the API reference: pgplug as installed, and its docstrings' Sphinx roles as links.

griffe reads the source tree, where the built-in plugins live in plugins/; installed, they are the subpackage
pgplug.plugins (pyproject.toml's ``package-dir``). This extension attaches each such folder to the pgplug it
loads, under the installed name, so ``::: pgplug.plugins.estimators`` and links to it resolve. And it turns
``:class:`pgplug.x.Y``` (and ``:func:``, ``:mod:``, ...) into a cross-reference that links when the target is in
the reference and stays code when it is not, so docstrings keep the Sphinx style SB3 uses.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import griffe

#: A Sphinx cross-reference role: ``:class:`~pgplug.contracts.estimator.Estimator``` or ``:meth:`learn```.
ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj):`(?P<tilde>~?)(?P<target>[\w.]+)`")


def _installed_subpackages(root: Path) -> dict[str, Path]:
    """Subpackage name -> source folder, for pyproject.toml's ``pgplug.NAME = "folder"`` package-dir entries."""
    package_dir = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {
        name.removeprefix("pgplug."): root / folder
        for name, folder in package_dir.items()
        if name.count(".") == 1 and name.startswith("pgplug.") and (root / folder / "__init__.py").exists()
    }


def _as_link(match: re.Match[str]) -> str:
    target = match["target"]
    title = target.rsplit(".", 1)[-1] if match["tilde"] else target
    return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'


class PgplugLayout(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "pgplug" or pkg.filepath is None or isinstance(pkg.filepath, list):
            return
        for name, folder in _installed_subpackages(pkg.filepath.parent.parent).items():
            module = loader.load(folder)  # loaded as the top-level package named after the folder ...
            loader.modules_collection.del_member(module.name)
            module.name = name  # ... and moved under pgplug, where installing puts it
            pkg.set_member(name, module)

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_as_link, obj.docstring.value)
