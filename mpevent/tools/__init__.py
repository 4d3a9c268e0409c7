"""Tools of the command line: benchmarks, their plot, and the demo.

Imported only by ``__main__`` and the scripts in ``benchmarks/``: nothing
of the public API depends on them (import-linter keeps it so).
"""
