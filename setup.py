"""Build the C part of mpevent; everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mpevent.shm._native",
            sources=[
                f"src/native/{name}.c" for name in ("os", "layout", "locks", "waiters", "slots", "wait", "watch", "spin", "notify", "records", "heap", "spill", "handle", "liveness", "testpoints")
            ],
            depends=["src/native/arena.h", "src/native/atomics.h", "src/native/os.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
