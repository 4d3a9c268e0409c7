"""Fail when a comment, docstring or doc names a source file that is not there.

Looks for names ending in .py, .c, .h, .pyi or .md -- bare (``heap.c``) or
with a path (``src/native/heap.c``, ``mpevent/shm/_arena.py``) -- in the
package, the C sources, the tests, the benchmarks and the docs, and checks
that each names a file of the tree.  A stale pointer is worse than none.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["mpevent", "src", "tests", "benchmarks", "docs", "README.md", "CHANGELOG.md"]
CITED = re.compile(r"(?<![\w/.-])((?:[\w-]+/)*[\w-]+\.(?:py|c|h|pyi|md))\b")
# Names that are not files of this tree: other projects' files and examples.
ELSEWHERE = {
    "os_unix.c",
    "_parking_lot.py",
    "_base.py",
    "_abstract_linkable.py",
    "semaphore.c",
    "conf.py",
    "example.py",
    "every_call.py",
    "cooperative.py",
    "program.py",
    "killing.py",
}  # (the last ones are scripts the tests write into a temporary directory)


def sources(scanned: list[str]) -> Iterator[Path]:
    """The files a reader reads as prose or code: Python, C, stubs and Markdown."""
    for top in scanned:
        base = ROOT / top
        for source in [base] if base.is_file() else sorted(base.rglob("*")):
            if (
                source.suffix in (".py", ".c", ".h", ".cpp", ".pyi", ".md")
                and "_build" not in source.parts
            ):
                yield source


def main() -> int:
    files = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    names = {p.name for p in files}
    paths = {p.relative_to(ROOT).as_posix() for p in files}
    missing = []
    for source in sources(SCANNED):
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if line.lstrip().startswith("#include <"):
                continue  # a system header
            for cited in CITED.findall(line):
                name = cited.rsplit("/", 1)[-1]
                if name in ELSEWHERE or cited.startswith(("http", "www")):
                    continue
                known = (
                    name in names
                    if "/" not in cited
                    else (cited in paths or any(p.endswith("/" + cited) for p in paths))
                )
                if not known:
                    missing.append(f"{source.relative_to(ROOT)}:{number}: {cited}")
    for line in missing:
        print(f"names a file that is not there: {line}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
