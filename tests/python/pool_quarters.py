"""4 multiprocessing workers (one process each) that map one file and each read a
different quarter of it (every page), then report their own smaps Rss for
the file while it is still mapped. Prints one line per worker:
`worker PID RSS_BYTES`. Usage: pool_quarters.py FILE START_METHOD"""
import mmap
import os
import sys
from multiprocessing import get_context


def smaps_rss(path):
    rss, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                inside = len(fields) >= 6 and fields[5] == path
            elif inside and fields[0] == "Rss:":
                rss += int(fields[1]) * 1024
    return rss


def work(path, quarter, results):
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        n = len(m)
        total = 0
        for off in range(quarter * n // 4, (quarter + 1) * n // 4, 4096):
            total += m[off]
        kept = [bytearray(1000) for _ in range(100)]
        rss = smaps_rss(os.path.realpath(path))
        m.close()
    results.put((os.getpid(), rss, len(kept), total))


if __name__ == "__main__":
    path, method = sys.argv[1], sys.argv[2]
    ctx = get_context(method)
    results = ctx.Queue()
    workers = [ctx.Process(target=work, args=(path, q, results)) for q in range(4)]
    for w in workers:
        w.start()
    for _ in workers:
        pid, rss, _, _ = results.get()
        print(f"worker {pid} {rss}", flush=True)
    for w in workers:
        w.join()
