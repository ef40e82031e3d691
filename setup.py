"""Build the optional native load engine; the project's metadata lives in pyproject.toml.

``bench.loadgen._engine`` is C against the CPython API (Linux: epoll, pthreads). It is
declared ``optional``: without a C compiler (or on a platform without epoll) ``pip install``
still succeeds, and the pure-Python Locust users run instead (``bench.loadgen.engine``
says which engine is in use and why).
"""

from setuptools import Extension, setup

ENGINE_SOURCES = [
    "bench/loadgen/_engine.c",
    "bench/loadgen/_loop.c",
    "bench/loadgen/_echo_server.c",
]

setup(
    ext_modules=[
        Extension(
            "bench.loadgen._engine",
            sources=ENGINE_SOURCES,
            depends=["bench/loadgen/_engine.h", "bench/loadgen/_hist.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers", "-Wno-cast-function-type"],
            libraries=["pthread"],
            optional=True,
        ),
    ],
)
