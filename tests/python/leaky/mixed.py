"""Leaks 50 blocks through leaky_cache_insert called directly and 50 called
through functools.partial, from one line: the same Python frames, reached
through different native frames of the interpreter (partial_call and a new
run of the eval loop). Exits without finalization, as main.py."""
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cache import leaky_cache_insert  # noqa: E402


def fill():
    calls = [leaky_cache_insert] * 50 + [functools.partial(leaky_cache_insert)] * 50
    for call in calls:
        call(4000)  # mixed: one line, two native paths


fill()
sys.stdout.flush()
os._exit(0)
