/* Maps many files one after another, usually at the same address: map,
 * read every page, unmap, map the next. `remap DIR FILES THREADS`: writes
 * FILES files of 1 MiB (DIR/file-N), then maps and reads them from THREADS
 * threads (each takes every THREADS-th file). A tracer that names a mapping
 * from /proc/PID/maps after the fact sees the next file at that address. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FILE_BYTES (1 << 20)

static const char *dir;
static int files, threads;
static volatile unsigned long sum;

static void path_of(int i, char *out, size_t n) { snprintf(out, n, "%s/file-%03d", dir, i); }

static void *reader(void *arg) {
    long first = (long)arg;
    long page = sysconf(_SC_PAGESIZE);
    for (int i = (int)first; i < files; i += threads) {
        char path[4096];
        path_of(i, path, sizeof path);
        int fd = open(path, O_RDONLY);
        if (fd < 0) { perror(path); exit(1); }
        unsigned char *p = mmap(0, FILE_BYTES, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) { perror("mmap"); exit(1); }
        close(fd);
        unsigned long s = 0;
        for (long off = 0; off < FILE_BYTES; off += page) s += p[off];
        sum += s;
        munmap(p, FILE_BYTES);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: remap DIR FILES THREADS\n"); return 2; }
    dir = argv[1];
    files = atoi(argv[2]);
    threads = atoi(argv[3]);
    static unsigned char block[FILE_BYTES];
    for (int i = 0; i < files; i++) {
        char path[4096];
        path_of(i, path, sizeof path);
        memset(block, i & 0xff, sizeof block);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, block, sizeof block) != (ssize_t)sizeof block) { perror(path); return 1; }
        close(fd);
    }
    pthread_t t[64];
    for (long i = 0; i < threads && i < 64; i++) pthread_create(&t[i], 0, reader, (void *)i);
    for (int i = 0; i < threads && i < 64; i++) pthread_join(t[i], 0);
    printf("read %d files from %d threads (%lu)\n", files, threads, sum);
    return 0;
}
