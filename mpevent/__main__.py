"""python -m mpevent: the command line.

Exit status: 0 success, 1 the command's negative answer (e.g. a failed
demo), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpevent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="processes waiting on one Event, then a benchmark")
    demo.add_argument("--workers", type=int, default=4)
    commands.add_parser("clean", help="remove arenas whose processes are all dead")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from . import _demo

        return _demo.run(workers=args.workers)
    if args.command == "clean":
        from . import _arena

        removed = _arena.clean()
        for name in removed:
            print(f"removed {name}")
        print(f"{len(removed)} abandoned arena(s) removed")
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
