"""python -m mpevent: look at and drive mpevent objects from the shell.

Commands:
  list [--url URL]     arenas (attached processes, records, waiters) and named
                       objects; with --url, the objects on that Redis server
  set NAME             set the Event called NAME
  clear NAME           clear the Event called NAME
  wait NAME [--timeout S]
                       wait until the object called NAME is set / ready
  clean                remove arenas and names left by processes that were killed
  doctor [--json]      what this machine and container allow; exit 1 with advice
                       when something will fail
  demo                 processes waiting on one Event, then a short benchmark
  bench [--quick] [--plot FILE]
                       every benchmark against its peers, in one run, with a plot

Exit status: 0 success (wait: the object is set); 1 wait timed out; 2 bad
usage, or no object has that name, or it is of the wrong kind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._interface import Backend

EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE = 0, 1, 2


def _backend(args: argparse.Namespace) -> Backend:
    """The backend named by --url (default: this machine's shared memory)."""
    from ._connect import connect

    return connect(getattr(args, "url", None) or "local://")


def _cmd_list(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        for line in backend.summary():
            print(line)
        print("named objects:")
        for name in backend.names():
            try:
                obj = backend.open(name)
            except (OSError, LookupError, ValueError, TypeError) as exc:
                print(f"  {name}: unavailable ({exc})")
                continue
            info = obj._record.info()
            waiters = f", {info['waiters']} waiters" if "waiters" in info else ""
            print(f"  {name}: {obj._PUBLIC}, {obj._describe_state()}{waiters}")
    return EXIT_OK


def _cmd_set(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        backend.Event.open(args.name).set()
    return EXIT_OK


def _cmd_clear(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        backend.Event.open(args.name).clear()
    return EXIT_OK


def _cmd_wait(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        obj = backend.open(args.name)
        return EXIT_OK if obj._wait_ready(args.timeout) else EXIT_TIMEOUT


def _cmd_clean(args: argparse.Namespace) -> int:
    with _backend(args) as backend:
        report = backend.clean(dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for name in report.removed:
        print(f"{verb} {name}")
    print(f"{len(report.removed)} removed{' (dry run)' if args.dry_run else ''}: {report.note}")
    return EXIT_OK


BENCH_ROWS = (
    "ping_pong",
    "broadcast",
    "values",
    "parked",
    "wakeups",
    "value_ping_pong",
    "ray",
    "idle",
    "creation",
    "footprint",
    "spill",
    "redis",
)


def _cmd_bench(args: argparse.Namespace) -> int:
    from .tools import bench as _bench

    quick = args.quick
    scale = 0.2 if quick else 1.0
    rows: dict[str, Callable[[], object]] = {
        "ping_pong": lambda: _bench.report_ping_pong(int(5000 * scale), 1 if quick else 7),
        "value_ping_pong": lambda: _bench.report_value_ping_pong(
            int(5000 * scale), 1 if quick else 7
        ),
        "broadcast": lambda: _bench.report_broadcast(
            _bench.QUICK_BROADCAST_SIZES if quick else _bench.BROADCAST_SIZES, 6 if quick else 20
        ),
        "values": lambda: _bench.report_value_handoff(
            int(100 * scale),
            1 if quick else 3,
            _bench.QUICK_VALUE_SIZES if quick else _bench.VALUE_SIZES,
            modes=("dropped",) if quick else ("dropped", "kept"),
        ),
        "parked": lambda: _bench.report_parked_handoff(
            10 if quick else 40, _bench.QUICK_PARKED_SIZES if quick else _bench.PARKED_SIZES
        ),
        "wakeups": lambda: _bench.report_wakeup_latency(int(300 * scale), 1 if quick else 3),
        "ray": lambda: _bench.report_ray_handoff(5 if quick else 20, [1 << 20, 32 << 20]),
        "idle": lambda: _bench.report_idle_cost(4, 50, 3.0 if quick else 10.0),
        "creation": lambda: {"seconds": _bench.report_creation(1_000_000)},
        "footprint": lambda: _bench.report_footprint(0.1 if quick else 1.0),
        "spill": lambda: _bench.report_spill(256 << 20, 2 if quick else 5, 1 if quick else 3),
    }
    if args.url:
        from .tools.bench import across_machines

        rows["redis"] = lambda: across_machines.report(
            args.url, 50 if quick else 200, 1 if quick else 3
        )
    from .tools import benchrun as _benchrun

    chosen = args.only or list(rows)
    _benchrun.run({name: rows[name] for name in chosen}, args.json, args.plot)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .tools import demo as _demo

    return _demo.run(workers=args.workers, out=args.out)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .tools import doctor

    return doctor.main(args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mpevent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        handlers[name] = handler
        return commands.add_parser(name, help=help, description=help)

    url_help = "a backend URL (redis://...; default: this machine's shared memory)"
    listing = command("list", _cmd_list, "list arenas and named objects")
    setting = command("set", _cmd_set, "set the Event called NAME")
    setting.add_argument("name")
    clearing = command("clear", _cmd_clear, "clear the Event called NAME")
    clearing.add_argument("name")
    wait = command("wait", _cmd_wait, "wait for the object called NAME (exit 1 on timeout)")
    wait.add_argument("name")
    wait.add_argument("--timeout", type=float, default=None, help="seconds (default: forever)")
    clean = command("clean", _cmd_clean, "remove segments and names of dead processes")
    clean.add_argument("--dry-run", action="store_true", help="only say what would go")
    for sub in (listing, setting, clearing, wait, clean):
        sub.add_argument("--url", help=url_help)
    doctor = command("doctor", _cmd_doctor, "what this machine allows; exit 1 with advice")
    doctor.add_argument("--json", action="store_true", help="the same as JSON, for scripts")
    bench = command("bench", _cmd_bench, "every benchmark against its peers, with a plot")
    bench.add_argument("--quick", action="store_true", help="fewer rounds (about 30 s)")
    bench.add_argument("--plot", metavar="FILE", help="write a PNG plot (needs matplotlib)")
    bench.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    bench.add_argument("--url", help="also compare across this Redis server (redis://...)")
    bench.add_argument(
        "--only",
        action="append",
        choices=BENCH_ROWS,
        metavar="ROW",
        help=f"run only this row (repeatable): {', '.join(BENCH_ROWS)}",
    )
    demo = command("demo", _cmd_demo, "processes waiting on one Event, then a benchmark")
    demo.add_argument("--workers", type=int, default=4)
    demo.add_argument(
        "--out", default=".", help="where mpevent-bench.json and mpevent-bench.png go (default: .)"
    )
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except (FileNotFoundError, LookupError, TypeError, ValueError, PermissionError) as exc:
        print(f"mpevent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConnectionError as exc:
        print(f"mpevent {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
