"""A leak made from Python code a few calls deep: 10 MB in a bytearray that
is still live when the program leaves with os._exit (no interpreter
teardown frees it). Its allocation stack runs malloc <- CPython's object
code <- the bytecode interpreter <- Py_RunMain <- main, all through
Debian's python3, which is built without frame pointers."""
import os

KEPT = []


def allocate_here(n):
    KEPT.append(bytearray(n))


def middle(n):
    allocate_here(n)


def outer(n):
    middle(n)


outer(10_000_000)
os._exit(0)
