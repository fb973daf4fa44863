"""A Python program that marks phases with memtrace's module and records its
own view of them (monotonic times around each phase, pages it touched), for
the end-to-end tests to compare with memtrace's trace.

    phases.py DATA_FILE OUT_JSON [--wait]

With --wait it prints "ready" once the module is imported and waits for a
line on stdin before its first phase (memtrace attaches meanwhile)."""
import contextlib
import json
import mmap
import os
import sys
import threading
import time

import memtrace  # the first phase follows at once

data_path, out_path = sys.argv[1], sys.argv[2]
if "--wait" in sys.argv:
    print("ready", flush=True)
    sys.stdin.readline()

PAGE = mmap.PAGESIZE
seen = []


@contextlib.contextmanager
def timed(name):
    # The times bracket the markers: memtrace's phase lies within them.
    before = time.monotonic_ns()
    with memtrace.phase(name):
        yield
    seen.append({"name": name, "before_ns": before, "after_ns": time.monotonic_ns()})


def touch(view, first_page, pages):
    total = 0
    for page in range(first_page, first_page + pages):
        total += view[page * PAGE]
    return total


with timed("startup"):
    file = open(data_path, "rb")
    view = mmap.mmap(file.fileno(), 0, prot=mmap.PROT_READ)
    pages = len(view) // PAGE
    time.sleep(0.02)

with timed("load"):
    touch(view, 0, pages // 4)

with timed("search"):
    for i in range(3):
        with timed("query"):
            touch(view, pages // 2 + i * (pages // 10), pages // 10)
            time.sleep(0.01)


def worker():
    with timed("worker"):
        time.sleep(0.03)


thread = threading.Thread(target=worker)
thread.start()
thread.join()
# join() returns when the thread's Python part is done; its OS thread still
# runs glibc's exit code for a moment, faulting libc pages, while the next
# phase begins (and --phase-truth reads smaps with only the main thread
# stopped). Wait until it is gone, so each phase's truth is its own.
while len(os.listdir("/proc/self/task")) > 1:
    time.sleep(0.001)


@memtrace.phase("reread")
def reread():
    return touch(view, 0, pages // 4)


before = time.monotonic_ns()
reread()
seen.append({"name": "reread", "before_ns": before, "after_ns": time.monotonic_ns()})

view.close()
file.close()
with open(out_path, "w") as out:
    json.dump({"uid": os.getuid(), "pages": pages, "page_size": PAGE, "library": memtrace.library, "phases": seen}, out)
