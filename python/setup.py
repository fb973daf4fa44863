"""Builds the phase-marker library next to the module when a C compiler is
there (optional: without one the package installs all the same, and finds
the library memtrace names or writes; see memtrace/__init__.py).

It is built as an extension so setuptools knows where to put it; it is a
plain shared library (no Python API), loaded with ctypes, never imported."""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "memtrace._markers",
            ["memtrace/_markers.c"],
            # As memtrace's build.rs: see the source's comment.
            extra_compile_args=["-O0", "-fno-omit-frame-pointer"],
            optional=True,
        )
    ]
)
