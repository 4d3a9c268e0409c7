"""Build the C part of mpevent; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mpevent.shm._native",
            sources=[
                f"src/native/{name}.c" for name in ("os", "local", "spin", "testpoints", "layout", "liveness", "locks", "spill", "waiters", "slots", "heap", "records", "claims", "wait", "notify", "testing", "handle", "module")
            ],
            depends=["src/native/arena.h", "src/native/atomics.h", "src/native/os.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
