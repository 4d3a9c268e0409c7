"""Tools of the command line: the doctor, benchmarks, their plot, and the demo.

Imported only by ``__main__`` and the scripts in ``benchmarks/``: nothing
of the public API depends on them (import-linter keeps it so).  Layers,
top down: ``demo`` (processes waiting on one Event, then a short
benchmark) and ``doctor`` (what this machine and container allow);
``benchrun`` (running benchmark rows: progress, summary, JSON); ``bench``
(the benchmark families, one module each) and ``plot`` (their figure).
"""
