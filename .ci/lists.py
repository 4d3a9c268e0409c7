"""Fail when a list that names every part of something leaves a part out.

A list that reads as complete and is not goes stale without anyone noticing
(a new module, a new C method).  Four are checked against the tree, and
one rule that keeps a surface apart:

* each package's ``__init__.py`` docstring names every module of its
  package, in backticks (``_hub``, ``_hub.py``, ``bench/``; the C extension
  by its stub, ``_native``);
* the import-linter contracts (``[tool.importlinter]`` in pyproject.toml):
  every Python module of a package is in a layer of a contract whose
  container is that package, and no layer names a module that is not there
  (a layer in parentheses is optional);
* ``mpevent/shm/_native.pyi`` declares every function, type, method and
  constant that the C module defines (src/native/*.c: the module's function
  table, each type's method table, the exception and constants added at
  init, the test surface's table added to the module), and nothing it
  does not;
* the map at the top of docs/design.md (before its first section) names
  every file of src/native/ and every module of mpevent, mpevent.shm and
  mpevent.redis (by name: a module named like one of the other backend's
  is found by either);
* the test surface (``testing_*``, src/native/testing.c) is called by no
  module of mpevent: only tests use it.

Each failure names the list, what it leaves out or names wrongly, and where.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mpevent"
NATIVE = ROOT / "src" / "native"
STUB = PACKAGE / "shm" / "_native.pyi"
DESIGN = ROOT / "docs" / "design.md"
# Packages whose every module the design map names (tools/ is one row there).
MAPPED = ["mpevent", "mpevent.shm", "mpevent.redis"]


def _packages() -> dict[str, Path]:
    """Dotted name -> directory of every package of mpevent."""
    return {
        ".".join(init.parent.relative_to(ROOT).parts): init.parent
        for init in sorted(PACKAGE.rglob("__init__.py"))
    }


def _modules(directory: Path, stubs: bool = True) -> set[str]:
    """Modules of a package: its .py files, its subpackages and (stubs) C modules' stubs."""
    names = {path.stem for path in directory.glob("*.py") if path.stem != "__init__"}
    names |= {path.name for path in directory.iterdir() if (path / "__init__.py").is_file()}
    if stubs:
        names |= {path.stem for path in directory.glob("*.pyi")}
    return names


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _docstrings_unnamed(packages: dict[str, Path]) -> list[str]:
    wrong = []
    for dotted, directory in packages.items():
        init = directory / "__init__.py"
        docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
        for module in sorted(_modules(directory)):
            named = rf"`(?:[\w.]+[./])?{re.escape(module)}(?:\.pyi?|/)?`"
            if not re.search(named, docstring):
                wrong.append(
                    f"{_relative(init)}: the docstring does not name the module {module} "
                    f"(of {dotted}); say in a few words what it owns, as ``{module}``"
                )
    return wrong


def _layer_names(layer: str) -> list[tuple[str, bool]]:
    """(module, optional) of each module a layer names ("a | b", "a : b", "(a)")."""
    named = []
    for part in re.split(r"[|:]", layer):
        part = part.strip()
        optional = part.startswith("(") and part.endswith(")")
        named.append((part.strip("() "), optional))
    return [(name, optional) for name, optional in named if name]


def _contracts_unnamed(packages: dict[str, Path]) -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    layered: dict[str, set[str]] = {}
    wrong = []
    for contract in contracts:
        if contract.get("type") != "layers":
            continue
        for container in contract.get("containers", []):
            modules = _modules(packages[container], stubs=False) if container in packages else set()
            for layer in contract["layers"]:
                for name, optional in _layer_names(layer):
                    layered.setdefault(container, set()).add(name)
                    if name not in modules and not optional:
                        wrong.append(
                            f"pyproject.toml: the import-linter contract {contract['name']!r} "
                            f"names {name}, which is not a module of {container}"
                        )
    for dotted, directory in packages.items():
        missing = sorted(_modules(directory, stubs=False) - layered.get(dotted, set()))
        wrong.extend(
            f"pyproject.toml: {dotted}.{module} is outside every import-linter layers contract; "
            f"add it to the layers of the contract with containers = [{dotted!r}]"
            for module in missing
        )
    return wrong


def _tables(text: str, kind: str) -> dict[str, str]:
    """Name -> body of every C array or struct of *kind* (``PyMethodDef``...) in *text*."""
    pattern = rf"^(?:static\s+)?{kind}\s+(\w+)(?:\[\])?\s*=\s*\{{(.*?)^\}};"
    return dict(re.findall(pattern, text, re.M | re.S))


def _native_defined() -> tuple[
    dict[str, str], dict[str, tuple[str, dict[str, str]]], dict[str, str]
]:
    """What the C module defines, each with the file that defines it: (functions,
    type -> (file, its methods), constants).  C tables are static: each is
    looked up in its own file."""
    functions: dict[str, str] = {}
    types: dict[str, tuple[str, dict[str, str]]] = {}
    constants: dict[str, str] = {}
    every_table: dict[str, tuple[str, list[str]]] = {}  # a table -> (its file, its names)
    added: set[str] = set()  # tables added to the module with PyModule_AddFunctions
    for path in sorted(NATIVE.glob("*.c")):
        text = path.read_text()
        methods = {
            table: re.findall(r'^\s*\{"(\w+)",', body, re.M)
            + re.findall(r"^\s*METHOD\((\w+),", body, re.M)
            for table, body in _tables(text, "PyMethodDef").items()
        }
        slots = {
            name: table_of.group(1)
            for name, body in _tables(text, "PyType_Slot").items()
            if (table_of := re.search(r"\{Py_tp_methods,\s*(\w+)\}", body))
        }
        for body in _tables(text, "PyType_Spec").values():
            name = re.search(r'\.name\s*=\s*"mpevent\.shm\._native\.(\w+)"', body)
            spec_slots = re.search(r"\.slots\s*=\s*(\w+)", body)
            if name and spec_slots:
                table = methods.get(slots.get(spec_slots.group(1), ""), [])
                types[name.group(1)] = (path.name, dict.fromkeys(table, path.name))
        exception = r'PyErr_NewException(?:WithDoc)?\(\s*"mpevent\.shm\._native\.(\w+)"'
        for name in re.findall(exception, text):
            types[name] = (path.name, {})
        for name in re.findall(r'PyModule_Add(?:Int|String)Constant\(\s*\w+,\s*"(\w+)"', text):
            constants[name] = path.name
        if found := re.search(r"\.m_methods\s*=\s*(\w+)", text):
            functions.update(dict.fromkeys(methods.get(found.group(1), []), path.name))
        every_table.update({table: (path.name, names) for table, names in methods.items()})
        added.update(re.findall(r"PyModule_AddFunctions\(\s*\w+,\s*(\w+)\)", text))
    for table in sorted(added & set(every_table)):
        where, names = every_table[table]
        functions.update(dict.fromkeys(names, where))
    return functions, types, constants


def _stub_declared() -> tuple[set[str], dict[str, set[str]], set[str]]:
    """What the stub declares: (functions, classes -> their methods, constants)."""
    functions: set[str] = set()
    classes: dict[str, set[str]] = {}
    constants: set[str] = set()
    for node in ast.parse(STUB.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            functions.add(node.name)
        elif isinstance(node, ast.ClassDef):
            classes[node.name] = {
                item.name
                for item in node.body
                if isinstance(item, ast.FunctionDef) and not re.fullmatch(r"__\w+__", item.name)
            }
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            constants.add(node.target.id)
    return functions, classes, constants


def _stub_unmatched() -> list[str]:
    functions, types, constants = _native_defined()
    declared_functions, classes, declared_constants = _stub_declared()
    stub = _relative(STUB)
    wrong = []

    def compare(what: str, defined: dict[str, str], declared: set[str], owner: str = "") -> None:
        for name in sorted(set(defined) - declared):
            where = f"src/native/{defined[name]}"
            wrong.append(f"{stub}: does not declare the {what} {owner}{name} ({where} defines it)")
        for name in sorted(declared - set(defined)):
            wrong.append(f"{stub}: declares the {what} {owner}{name}; src/native defines none")

    compare("function", functions, declared_functions)
    compare("constant", constants, declared_constants)
    compare("type", {name: where for name, (where, _) in types.items()}, set(classes))
    for name in sorted(set(types) & set(classes)):
        compare("method", types[name][1], classes[name], owner=f"{name}.")
    if not functions or not types:
        wrong.append("src/native: no module function table or no type found; is this check stale?")
    return wrong


def _map_unnamed(packages: dict[str, Path]) -> list[str]:
    text = DESIGN.read_text()
    first_section = re.search(r"^## ", text, re.M)
    design_map = text[: first_section.start() if first_section else len(text)]
    wanted = [(f"src/native/{path.name}", path.name) for path in sorted(NATIVE.glob("*.[ch]"))]
    for dotted in MAPPED:
        wanted += [(f"{dotted}.{module}", module) for module in sorted(_modules(packages[dotted]))]
    return [
        f"docs/design.md: the map (before the first section) does not name {what}"
        for what, name in wanted
        if not re.search(rf"(?<![\w.-]){re.escape(name)}(?!\w)", design_map)
    ]


def _test_surface_used() -> list[str]:
    """The test surface (``testing_*``, src/native/testing.c) is for tests only."""
    return [
        f"{_relative(path)}:{number}: calls the test surface ({name}); only tests may"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for name in re.findall(r"\btesting_\w+", line)
    ]


def main() -> int:
    packages = _packages()
    wrong = (
        _docstrings_unnamed(packages)
        + _contracts_unnamed(packages)
        + _stub_unmatched()
        + _map_unnamed(packages)
        + _test_surface_used()
    )
    for line in wrong:
        print(line)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
