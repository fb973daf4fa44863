"""Phases for memtrace, marked from Python.

    import memtrace

    with memtrace.phase("load"):
        index = load_index(path)

    @memtrace.phase("search")
    def search(index, queries): ...

    memtrace.begin("warmup"); ...; memtrace.end("warmup")

Under ``sudo memtrace run -- python3 app.py`` (or ``sudo memtrace -p PID``)
each phase splits memtrace's figures: the bytes of each mapped file the
kernel loaded, page faults, heap growth. Phases nest; they are the
process's (its threads mark into one stack of open phases), as with
memtrace's C markers.

How: the module loads a tiny C library whose two empty functions,
``memtrace_phase_begin`` and ``memtrace_phase_end``, take the phase name;
memtrace's uprobes on them read it. The program may run as any user while
memtrace runs as root: nothing here needs privileges. Untraced, a phase
costs two calls of an empty C function through ctypes.

The library is looked for, in order:

1. ``$MEMTRACE_MARKER_LIB``: ``memtrace run`` names its own copy there and
   probes it before the program starts, so the first phase is never missed;
2. ``_markers*.so`` next to this file: built by ``pip install`` when a C
   compiler is present, for programs started without memtrace that
   ``memtrace -p PID`` attaches to later;
3. ``/run/memtrace-markers/libmemtrace-markers.so``: left by any
   ``memtrace run`` on this machine since it booted.

With none of them, or with ``MEMTRACE_MARKER_LIB`` set but empty,
``begin``/``end`` do nothing and ``library`` is None. Standard library only.
"""

import functools
import glob
import os

__all__ = ["phase", "begin", "end", "library"]

_SHARED = "/run/memtrace-markers/libmemtrace-markers.so"


def _find_library():
    named = os.environ.get("MEMTRACE_MARKER_LIB")
    if named is not None:
        return named or None  # set but empty: mark nothing
    here = os.path.dirname(os.path.abspath(__file__))
    built = sorted(glob.glob(os.path.join(here, "_markers*.so")))
    if built:
        return built[0]
    if os.path.exists(_SHARED):
        return _SHARED
    return None


def _load(path):
    """The two marker functions of the library at ``path``."""
    import ctypes

    lib = ctypes.CDLL(path)
    functions = []
    for name in ("memtrace_phase_begin", "memtrace_phase_end"):
        function = getattr(lib, name)
        # No argtypes: ctypes passes a bytes object as its char * directly,
        # faster than converting through c_char_p on every call.
        function.restype = None
        functions.append(function)
    return functions


def _nothing(_name):
    return None


library = _find_library()
"""The marker library this process loaded (a path), or None."""

try:
    _begin, _end = _load(library) if library else (_nothing, _nothing)
except (OSError, AttributeError) as error:
    # A bad $MEMTRACE_MARKER_LIB must not stop the program: it runs, unmarked.
    import sys

    print(f"memtrace: phases will not be marked: cannot load {library}: {error}", file=sys.stderr)
    library = None
    _begin, _end = _nothing, _nothing


_ENCODED = {}
_ENCODED_MAX = 4096  # names kept encoded; a program naming phases by id may make many


def _encoded(name):
    """``name`` as the NUL-free bytes the marker reads (memtrace keeps 39)."""
    try:
        return _ENCODED[name]
    except (KeyError, TypeError):
        pass
    encoded = name if isinstance(name, bytes) else str(name).encode("utf-8", "replace")
    encoded = encoded.replace(b"\0", b"?")  # C reads up to the first NUL
    if len(_ENCODED) < _ENCODED_MAX:
        try:
            _ENCODED[name] = encoded
        except TypeError:
            pass
    return encoded


def begin(name):
    """Phase ``name`` begins (inside the phases open now)."""
    _begin(_encoded(name))


def end(name):
    """The innermost open phase called ``name`` ends, with any phase begun
    inside it and not ended; an ``end`` with no such phase is counted."""
    _end(_encoded(name))


class phase:
    """A phase, as a context manager (``with phase("load"): ...``) or a
    decorator (``@phase("load")``). The phase ends when the block is left,
    by an exception too."""

    __slots__ = ("_name",)

    def __init__(self, name):
        self._name = _encoded(name)

    def __enter__(self):
        _begin(self._name)
        return self

    def __exit__(self, _type, _value, _traceback):
        _end(self._name)
        return False

    def __call__(self, function):
        name = self._name

        @functools.wraps(function)
        def marked(*args, **kwargs):
            _begin(name)
            try:
                return function(*args, **kwargs)
            finally:
                _end(name)

        return marked

    def __repr__(self):
        return f"memtrace.phase({self._name.decode('utf-8', 'replace')!r})"
