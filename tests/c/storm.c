/* Load for memtrace's storm tests: page faults or allocator calls at full
 * speed, counting its own.
 *   storm faults FILE MIB SECS   map FILE (sparse, created MIB MiB long)
 *       privately in 64 MiB windows and write one byte per page, so each
 *       page takes one copy-on-write fault; unmap; next window (wrapping
 *       around the file) until SECS pass. Prints "pages N".
 *   storm malloc THREADS SECS    THREADS threads malloc(64..319) + free at
 *       full speed until SECS pass. Prints "pairs N" (all threads).
 * Built by the tests: cc -g -O2 -fno-omit-frame-pointer storm.c -lpthread */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define WINDOW (64L << 20)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int faults(const char *path, long mib, double secs) {
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    if (fd < 0 || ftruncate(fd, mib << 20) != 0) {
        perror(path);
        return 1;
    }
    long size = mib << 20, page = sysconf(_SC_PAGESIZE), pages = 0, offset = 0;
    double end = now() + secs;
    while (now() < end) {
        char *p = mmap(NULL, WINDOW, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, offset);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        madvise(p, WINDOW, MADV_NOHUGEPAGE);
        for (long i = 0; i < WINDOW; i += page) {
            p[i] = 1;
        }
        pages += WINDOW / page;
        munmap(p, WINDOW);
        offset = (offset + WINDOW) % size;
    }
    printf("pages %ld\n", pages);
    return 0;
}

static double deadline;
static long counts[64];
/* Through volatile pointers: the compiler may not drop a malloc/free pair. */
static void *(*volatile allocate)(size_t) = malloc;
static void (*volatile release)(void *) = free;

static void *churn(void *arg) {
    long i = (long)arg, n = 0;
    while (now() < deadline) {
        for (int k = 0; k < 1000; k++) {
            char *p = allocate(64 + (n + k) % 256);
            p[0] = 1;
            release(p);
        }
        n += 1000;
    }
    counts[i] = n;
    return NULL;
}

static int mallocs(int threads, double secs) {
    pthread_t t[64];
    deadline = now() + secs;
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, churn, (void *)i);
    long pairs = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        pairs += counts[i];
    }
    printf("pairs %ld\n", pairs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 5 && strcmp(argv[1], "faults") == 0)
        return faults(argv[2], atol(argv[3]), atof(argv[4]));
    if (argc == 4 && strcmp(argv[1], "malloc") == 0 && atoi(argv[2]) > 0 && atoi(argv[2]) <= 64)
        return mallocs(atoi(argv[2]), atof(argv[3]));
    fprintf(stderr, "usage: storm faults FILE MIB SECS | storm malloc THREADS SECS\n");
    return 2;
}
