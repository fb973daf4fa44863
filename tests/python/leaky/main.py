"""Leaks through leaky_cache_insert from two callers, 300 and 100 blocks of
4,000 bytes, then exits without Python's finalization (which would free the
cache before memtrace's exit stop). Run as a script or through runpy."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cache import leaky_cache_insert  # noqa: E402


def load_index():
    for _ in range(300):
        leaky_cache_insert(4000)  # load: calls the cache


def warm_up():
    for _ in range(100):
        leaky_cache_insert(4000)  # warm: calls the cache


load_index()  # module: load
warm_up()  # module: warm
sys.stdout.flush()
os._exit(0)
