"""Prints `ready`, and at a line on stdin touches 4 MiB of new memory (page
faults: the kernel meets it), waits two seconds (memtrace attaches its probes
meanwhile: once, under CI's load on 2 cores, one second was not enough), makes BLOCKS calls of
malloc(BYTES) through ctypes (never freed), prints `done`, and exits at EOF.
Usage: allocate_on_request.py BLOCKS BYTES"""
import ctypes
import sys
import time

BLOCKS, BYTES = int(sys.argv[1]), int(sys.argv[2])
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
print("ready", flush=True)
sys.stdin.readline()
touched = bytearray(4 << 20)
time.sleep(2)
kept = [libc.malloc(BYTES) for _ in range(BLOCKS)]
print("done", flush=True)
sys.stdin.read()
