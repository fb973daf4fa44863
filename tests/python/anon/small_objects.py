"""Many small objects, kept: pymalloc serves them from its own mmap'd
arenas, so the anonymous memory they take is the arenas'. A chain of
nested tuples keeps them alive with no big list (whose buffer would be
malloc's). Prints the anonymous RSS before and after, from /proc."""
import sys


def anon_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def build(n):
    chain = None
    for i in range(n):
        chain = (chain, i + 1000)  # ints above the small-int cache: objects too
    return chain


n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 2_000_000
before = anon_kib()
kept = build(n)
after = anon_kib()
print(f"anon_kib_before={before} anon_kib_after={after}", flush=True)
if "--hold" in sys.argv:
    import os

    os._exit(0)  # no teardown: the exit stop sees the arenas still mapped
