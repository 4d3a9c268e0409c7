"""Measurements of mpevent beside its peers, one module per benchmark family.

Used by ``python -m mpevent bench`` and ``demo`` and by the scripts in
``benchmarks/``; nothing else imports them.  Families:

* ``ping_pong``  -- a flag handed back and forth between two processes, and a
  100 B value there and back (idle, loaded, pinned; with the CPU it costs);
* ``broadcast``  -- one set() waking N processes;
* ``values``     -- a value to a process blocked in get(), kept or dropped;
* ``parked``     -- a value to receivers parked for milliseconds, one process
  per peer, with the faults and CPU each handoff costs;
* ``ray``        -- the same beside Ray's object store;
* ``wakeups``    -- the latency of each way of waiting;
* ``idle``       -- what idle waiters cost;
* ``footprint``  -- what objects cost to create and hold;
* ``spill``      -- a value larger than a container's /dev/shm, spilled;
* ``across_machines`` -- the Redis backend beside raw Redis and Dask.

``_common`` holds what they share: figures that keep their samples,
interleaved trials, tables of ratios.
"""

from ._common import Figure, script
from .broadcast import BROADCAST_SIZES, QUICK_BROADCAST_SIZES, broadcast, report_broadcast
from .footprint import creation, footprint, report_creation, report_footprint
from .idle import idle_cost, report_idle_cost
from .parked import PARKED_SIZES, QUICK_PARKED_SIZES, parked_handoff, report_parked_handoff
from .ping_pong import ping_pong, report_ping_pong, report_value_ping_pong, value_ping_pong
from .ray import ray_handoff, report_ray_handoff
from .spill import report_spill, spill_handoff
from .values import QUICK_VALUE_SIZES, VALUE_SIZES, report_value_handoff, value_handoff
from .wakeups import report_wakeup_latency, wakeup_latency

__all__ = [
    "BROADCAST_SIZES",
    "PARKED_SIZES",
    "QUICK_BROADCAST_SIZES",
    "QUICK_PARKED_SIZES",
    "QUICK_VALUE_SIZES",
    "VALUE_SIZES",
    "Figure",
    "broadcast",
    "creation",
    "footprint",
    "idle_cost",
    "parked_handoff",
    "ping_pong",
    "ray_handoff",
    "report_broadcast",
    "report_creation",
    "report_footprint",
    "report_idle_cost",
    "report_parked_handoff",
    "report_ping_pong",
    "report_ray_handoff",
    "report_spill",
    "report_value_handoff",
    "report_value_ping_pong",
    "report_wakeup_latency",
    "script",
    "spill_handoff",
    "value_handoff",
    "value_ping_pong",
    "wakeup_latency",
]
