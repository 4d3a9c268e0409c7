"""Fail when a comment, docstring or doc names a function or module that is not there.

Two kinds of pointer are checked, in the same files as ``cited_files.py``:

* ``name()`` with an underscore in the name (``spin_for_flag()``,
  ``record_fail_claim()``): some C function, C method table entry, Python
  function, method or class of the tree must have that name;
* a dotted name that starts with one of our modules (``_spill.remove_orphans``,
  ``mpevent.shm._record``, ``Linkable._wait_ready``): the module must exist
  and define the last name (a def, class, or assignment in it).

* a prototype in ``src/native/arena.h`` under a ``/* file.c */`` heading:
  that file must define it (the header's map of who owns what);
* the C functions a protocol model (``src/native/models/*.cpp``) says it
  mirrors, in its "Mirrors" paragraph: each must be defined in src/native;
* atomics by name: no ``__atomic`` builtin in src/native outside
  ``atomics.h``, so a shared field is read or written through a named helper
  or under its lock, and a plain access stands out;
* the OS behind one interface: no file of src/native but ``os.c`` includes
  a kernel or POSIX header or calls the system (``os.h`` is the interface);
* floors: the C files call each other with no circle, and arena.h's map
  names every one of them.

Other projects' names that comments cite on purpose are listed in ELSEWHERE.
A stale pointer is worse than none.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from cited_files import sources  # the same files, read the same way

ROOT = Path(__file__).resolve().parent.parent
# Not CHANGELOG.md: an entry tells of the tree as it was when it was written.
SCANNED = ["mpevent", "src", "tests", "benchmarks", "docs", "README.md"]
CALLED = re.compile(r"(?<![\w.])([A-Za-z]\w*_\w+)\(\)")
DOTTED = re.compile(r"(?<![\w/])((?:mpevent\.)?(?:\w+\.)*_?[a-z]\w*\.\w+)")
# Functions of other projects and of the C library that comments name.
ELSEWHERE = {
    "call_soon_threadsafe",
    "pidfd_getfd",
    "add_reader",
    "pthread_atfork",
    "os_unix",
    "run_until_complete",
    "set_start_method",
    "get_context",
    "register_at_fork",
    "set_exception",
    "set_result",
    "get_running_loop",
    "create_future",
    "wait_for",
    "as_completed",
    "getLogger",
    "sys._is_gil_enabled",
    "unpark_all",
    "clock_gettime",
    "sched_getcpu",
    "shm_open",
    "shm_unlink",
    "memfd_create",
    "posix_fallocate",
    "fallocate",
    "futex_wait",
    "futex_wake",
    "get_nowait",
    "put_nowait",
    "spawn_main",
    "run_in_executor",
    "rlock_release",
    "sched_yield",
    "create_time",
}


def _definitions() -> tuple[set[str], dict[str, str]]:
    """Every function/method/class name of the tree, and module name -> its source text."""
    names: set[str] = set()
    modules: dict[str, str] = {}
    for path in sorted((ROOT / "src").rglob("*.[ch]")):
        text = path.read_text()
        names.update(re.findall(r"^(\w+)\(", text, re.M))  # a definition: name at line start
        names.update(re.findall(r"^#define (\w+)", text, re.M))
        names.update(re.findall(r"METHOD\((\w+),", text))
        names.update(re.findall(r'\{"(\w+)", \(PyCFunction\)', text))
        names.update(re.findall(r"\b(\w+)\s*\([^;{)]*\)\s*;", text))  # prototypes and calls
    for path in sorted(ROOT.rglob("*.py*")):
        if ".git" in path.parts or ".venv" in path.parts or path.suffix not in (".py", ".pyi"):
            continue
        text = path.read_text()
        names.update(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)", text, re.M))
        relative = path.relative_to(ROOT).with_suffix("")
        dotted = ".".join(relative.parts)
        if dotted.endswith(".__init__"):
            dotted = dotted[: -len(".__init__")]
        modules[dotted] = text
    return names, modules


def _names_in(text: str, rest: list[str]) -> bool:
    """Whether a module defines rest[0] (and, for Class.method, the method too)."""
    if not _defines(text, rest[0]):
        return False
    if len(rest) == 1 or not re.search(rf"^class {rest[0]}\b", text, re.M):
        return True  # an attribute of a module global is that object's business
    # Class.method: a def or attribute of that name in the class's module.
    return re.search(rf"\bdef {rest[1]}\b|\b{rest[1]}\s*[:=]", text) is not None


def _comments(source: Path) -> list[tuple[int, str]]:
    """(line number, text) of what a reader takes as prose: comments, docstrings, docs."""
    lines = source.read_text().splitlines()
    if source.suffix == ".md":
        return list(enumerate(lines, 1))
    prose = []
    inside = False
    for number, line in enumerate(lines, 1):
        if source.suffix in (".c", ".h"):
            start = line.find("/*")
            if inside or start >= 0:
                prose.append((number, line if inside else line[start:]))
            if start >= 0 and "*/" not in line[start:]:
                inside = True
            elif inside and "*/" in line:
                inside = False
            continue
        quotes = line.count('"""')
        if inside or quotes:
            prose.append((number, line))
        if quotes % 2:
            inside = not inside
        elif not inside and "#" in line:
            prose.append((number, line[line.index("#") :]))
    return prose


def _defines(text: str, name: str) -> bool:
    pattern = rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^\s*{name}\s*[:=]|\bimport .*\b{name}\b"
    return re.search(pattern, text, re.M) is not None or f"self.{name} =" in text


def _matching(modules: dict[str, str], dotted: str) -> list[str]:
    """The modules a dotted prefix may name: a full path, or the tail of one."""
    return [name for name in modules if name == dotted or name.endswith("." + dotted)]


def _check_dotted(modules: dict[str, str], cited: str) -> bool | None:
    """True/False if *cited* starts with one of our modules; None if it does not."""
    parts = cited.split(".")
    for cut in range(len(parts), 0, -1):
        prefix = ".".join(parts[:cut])
        if not (prefix.startswith("mpevent") or parts[0].startswith("_")):
            continue
        candidates = _matching(modules, prefix)
        if not candidates:
            continue
        rest = parts[cut:]
        if not rest or rest[0].startswith("__"):
            return True
        return any(_names_in(modules[module], rest) for module in candidates)
    return False if parts[0] == "mpevent" and len(parts) > 1 and parts[1].startswith("_") else None


def _misfiled_prototypes() -> list[str]:
    """Prototypes of arena.h filed under a C file that does not define them."""
    native = ROOT / "src" / "native"
    defined = {
        path.name: set(re.findall(r"^(\w+)\(", path.read_text(), re.M))
        for path in native.glob("*.c")
    }
    wrong = []
    heading = None
    header = native / "arena.h"
    for number, line in enumerate(header.read_text().splitlines(), 1):
        if match := re.match(r"/\* (\w+\.c)\b", line):
            heading = match.group(1)
            continue
        prototype = re.match(r"(?:[\w ]+\**\s*\**)\b(\w+)\((?!\))[^;{]*\);$", line)
        if heading in defined and prototype and prototype.group(1) not in defined[heading]:
            wrong.append(f"src/native/arena.h:{number}: {prototype.group(1)} is not in {heading}")
    return wrong


def _unmirrored() -> list[str]:
    """Names a model's "Mirrors" paragraph gives that src/native does not define."""
    native = ROOT / "src" / "native"
    defined: set[str] = set()
    for path in native.glob("*.c"):
        defined.update(re.findall(r"^(\w+)\(", path.read_text(), re.M))
    wrong = []
    for model in sorted((native / "models").glob("*.cpp")):
        text = model.read_text()
        paragraphs = re.findall(r"^ \* Mirrors\b(.*?)^ \*$", text, re.M | re.S)
        if not paragraphs:
            wrong.append(
                f'{model.relative_to(ROOT)}: no "Mirrors" paragraph naming its C functions'
            )
        for paragraph in paragraphs:
            paragraph = re.sub(r"\S+\.(?:c|h|cpp)\b", "", paragraph)  # file names
            for name in re.findall(r"\b([A-Za-z]\w*_\w+)\b", paragraph):
                if name not in defined:
                    wrong.append(
                        f"{model.relative_to(ROOT)}: mirrors {name}, defined nowhere in src/native"
                    )
    return wrong


def _bare_atomics() -> list[str]:
    """__atomic builtins in src/native outside atomics.h."""
    wrong = []
    for path in sorted((ROOT / "src" / "native").glob("*.[ch]")):
        if path.name == "atomics.h":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "__atomic" in line:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{number}: a bare __atomic builtin (atomics.h names them)"
                )
    return wrong


LIBC_HEADERS = {"errno.h", "limits.h", "stddef.h", "stdint.h", "stdio.h", "string.h"}
SYSTEM_CALL = re.compile(
    r"\b(getpid|mmap|munmap|mremap|pread|pwrite|open|openat|close|unlink|stat|fstat|statfs|"
    r"ftruncate|fcntl|ioctl|sigprocmask|pthread_\w+|madvise|syscall|socket|sendto|recv|"
    r"sched_\w+|sysconf|clock_gettime|eventfd|epoll_\w+|fork)\s*\("
)


def _os_outside() -> list[str]:
    """Kernel or POSIX headers and system calls in src/native outside os.c."""
    wrong = []
    for path in sorted((ROOT / "src" / "native").glob("*.c")):
        if path.name == "os.c":
            continue
        code = re.sub(
            r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), path.read_text(), flags=re.S
        )
        for number, line in enumerate(code.splitlines(), 1):
            line = re.sub(
                r'"(?:\\.|[^"\\])*"', '""', line
            )  # strings: a docstring may say "close()"
            header = re.match(r"#include <([\w/.]+)>", line)
            if header and header.group(1) not in LIBC_HEADERS:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{number}: <{header.group(1)}> belongs in os.c (os.h)"
                )
            if not header and (call := SYSTEM_CALL.search(line)):
                wrong.append(
                    f"{path.relative_to(ROOT)}:{number}: {call.group(1)}() belongs in os.c (os.h)"
                )
    return wrong


def _call_circles() -> list[str]:
    """C files that call each other in a circle; C files arena.h's map does not name."""
    native = ROOT / "src" / "native"
    texts = {path.name: path.read_text() for path in native.glob("*.c")}
    owner = {}
    for name, text in texts.items():
        for function in re.findall(r"^(\w+)\(", text, re.M):
            owner.setdefault(function, name)
    calls: dict[str, set[str]] = {name: set() for name in texts}
    for name, text in texts.items():
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for function in set(re.findall(r"\b(\w+)\s*\(", code)):
            if owner.get(function, name) != name:
                calls[name].add(owner[function])

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for callee in calls[todo.pop()] - seen:
                if callee == goal:
                    return True
                seen.add(callee)
                todo.append(callee)
        return False

    wrong = [
        f"src/native/{a} calls {b}, which calls back into {a}: a call circle (arena.h's floors)"
        for a in sorted(calls)
        for b in sorted(calls[a])
        if reaches(b, a)
    ]
    header = (native / "arena.h").read_text()
    map_text = header[: header.index("Why C:")]
    wrong += [
        f"src/native/arena.h: the map of files does not name {name}"
        for name in sorted(texts)
        if name not in map_text
    ]
    return wrong


def main() -> int:
    names, modules = _definitions()
    wrong = (
        _misfiled_prototypes() + _unmirrored() + _bare_atomics() + _os_outside() + _call_circles()
    )
    for source in sources(SCANNED):
        for number, line in _comments(source):
            where = f"{source.relative_to(ROOT)}:{number}"
            for called in CALLED.findall(line):
                tail = called.rsplit(".", 1)[-1]
                if tail not in names and called not in ELSEWHERE and tail not in ELSEWHERE:
                    wrong.append(f"{where}: {called}() is defined nowhere")
            for cited in DOTTED.findall(line):
                cited = cited.rstrip(".")
                if cited.endswith((".py", ".c", ".h", ".pyi", ".md")):
                    continue  # a file: cited_files.py checks it
                if _check_dotted(modules, cited) is False:
                    wrong.append(f"{where}: {cited} names nothing of that module")
    for line in wrong:
        print(line)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
