"""The wheel ships every package of the tree (a subpackage left out is an ImportError)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_tree_is_listed_for_the_wheel() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    listed = re.search(r"^packages = \[(.*?)\]", text, re.M | re.S)
    assert listed is not None, "[tool.setuptools] packages is gone"
    packages = set(re.findall(r'"([\w.]+)"', listed.group(1)))
    tree = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "mpevent").rglob("__init__.py")
    }
    assert tree == packages, (
        f"in the tree, not listed: {tree - packages}; listed, gone: {packages - tree}"
    )
