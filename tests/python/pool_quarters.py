"""4 multiprocessing workers (one process each) that map one file and each read a
different quarter of it (every page), then report their own smaps Rss for
the file and the file pages present in their own pagemap, and exit with the
file still mapped. Prints one line per worker:
`worker PID RSS_BYTES FIRST-LAST,FIRST-LAST...` (page indices in the file).
Usage: pool_quarters.py FILE START_METHOD"""
import mmap
import os
import struct
import sys
from multiprocessing import get_context

PRESENT, FILE_PAGE = 1 << 63, 1 << 61
KEPT = []


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


def file_pages(path):
    """Page indices in the file of its pages present in this process."""
    pages = set()
    with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split()
            if len(fields) < 6 or fields[5] != path:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            first = int(fields[2], 16) // 4096
            pagemap.seek(start // 4096 * 8)
            entries = pagemap.read((end - start) // 4096 * 8)
            for i, (e,) in enumerate(struct.iter_unpack("<Q", entries)):
                if e & PRESENT and e & FILE_PAGE:
                    pages.add(first + i)
    return pages


def ranges(pages):
    out, run = [], None
    for p in sorted(pages):
        if run and p == run[1] + 1:
            run[1] = p
        else:
            if run:
                out.append(run)
            run = [p, p]
    if run:
        out.append(run)
    return ",".join(f"{a}-{b}" for a, b in out)


def work(path, quarter, results):
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    n = len(m)
    total = 0
    for off in range(quarter * n // 4, (quarter + 1) * n // 4, 4096):
        total += m[off]
    kept = [bytearray(1000) for _ in range(100)]
    real = os.path.realpath(path)
    rss = smaps_rss(real)
    pages = ranges(file_pages(real))
    results.put((os.getpid(), rss, pages, len(kept), total))
    results.close()
    results.join_thread()
    # Exit with the file still mapped (a spawned worker's interpreter would
    # unmap it while finalizing): memtrace reads the pagemap at the exit.
    KEPT.append(m)
    os._exit(0)


if __name__ == "__main__":
    path, method = sys.argv[1], sys.argv[2]
    ctx = get_context(method)
    results = ctx.Queue()
    workers = [ctx.Process(target=work, args=(path, q, results)) for q in range(4)]
    for w in workers:
        w.start()
    for _ in workers:
        pid, rss, pages, _, _ = results.get()
        print(f"worker {pid} {rss} {pages}", flush=True)
    for w in workers:
        w.join()
