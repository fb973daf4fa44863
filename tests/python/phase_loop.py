"""`with memtrace.phase(...)` in a loop, timed: what a phase costs the program.

    phase_loop.py N

Prints `ns_per_phase X` (the loop with a phase per iteration) and
`ns_per_iteration Y` (the same loop with an empty body), both from
time.perf_counter_ns around the loop."""
import sys
import time

import memtrace

n = int(sys.argv[1])
phase = memtrace.phase

start = time.perf_counter_ns()
for _ in range(n):
    with phase("request"):
        pass
marked = time.perf_counter_ns() - start

start = time.perf_counter_ns()
for _ in range(n):
    pass
empty = time.perf_counter_ns() - start

print(f"library {memtrace.library}")
print(f"ns_per_phase {marked / n:.1f}")
print(f"ns_per_iteration {empty / n:.1f}")
