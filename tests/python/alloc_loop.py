"""`bytes(4000)` made and dropped in a loop, timed: each is one malloc and
one free (bytes over 512 B bypass pymalloc), made three Python calls deep.

    alloc_loop.py N

Prints `ns_per_alloc X` from time.perf_counter_ns around the loop."""
import sys
import time


def allocate(n):
    for _ in range(n):
        bytes(4000)


def middle(n):
    allocate(n)


def outer(n):
    middle(n)


n = int(sys.argv[1])
start = time.perf_counter_ns()
outer(n)
print(f"ns_per_alloc {(time.perf_counter_ns() - start) / n:.1f}")
