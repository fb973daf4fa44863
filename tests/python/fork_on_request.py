"""A parent that forks workers: 2 at once, then, at a line on stdin, 2 more.
Every worker makes BLOCKS calls of malloc(BYTES) through ctypes (never
freed): a new one the moment it is forked, an old one when its parent
wakes it. Each prints `worker PID` when it is done and waits until its
parent closes its pipe. The parent prints `ready` once the first 2 wait,
`done` when all 4 are done, and at EOF on stdin ends them and exits.
Usage: fork_on_request.py BLOCKS BYTES"""
import ctypes
import os
import sys

BLOCKS, BYTES = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
kept = []
# Write ends of the workers' wake pipes: a worker closes those it inherited
# (else a worker never sees EOF on its own pipe while a later one lives).
wake_ends = []


def allocate():
    for _ in range(BLOCKS):
        kept.append(libc.malloc(BYTES))


def fork_worker(allocate_now):
    wake_r, wake_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for fd in wake_ends + [wake_w]:
            os.close(fd)
        if allocate_now:
            allocate()
        else:
            os.read(wake_r, 1)
            allocate()
        os.write(done_w, b"d")
        os.read(wake_r, 1)  # until the parent closes it (EOF)
        os._exit(0)
    wake_ends.append(wake_w)
    return pid, wake_w, done_r


old = [fork_worker(False) for _ in range(2)]
print("ready", flush=True)
sys.stdin.readline()
new = [fork_worker(True) for _ in range(2)]
for _, wake, _ in old:
    os.write(wake, b"w")
for pid, _, done in old + new:
    os.read(done, 1)
    print(f"worker {pid}", flush=True)
print("done", flush=True)
sys.stdin.read()
for pid, wake, _ in old + new:
    os.close(wake)
    os.waitpid(pid, 0)
