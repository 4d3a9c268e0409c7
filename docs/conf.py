"""Sphinx configuration: `python -m sphinx -W -b html docs docs/_build/html`."""

import mpevent

project = "mpevent"
author = "the mpevent developers"
release = mpevent.__version__
version = release
extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build", "README.md", "examples"]
myst_heading_anchors = 3
autodoc_typehints = "description"
autodoc_member_order = "bysource"
html_theme = "furo"
html_title = f"mpevent {release}"
# No intersphinx: the build must not need the network.
