/* A C program that leaks through calloc, realloc and posix_memalign, each
 * from its own function, churns malloc/free (and realloc to 0) without leaking, and (with
 * `grow SECS`) leaks a 64 KiB block every 100 ms: the heap tests' target.
 * The SITE comments mark the lines the tests expect in the leak stacks.
 * Built by the tests: cc -g -O0 -fno-omit-frame-pointer leaky.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CALLOC_LEAKS 100 /* calloc(10, 100): 1,000 bytes each */
#define REALLOC_LEAKS 50 /* malloc(100) grown with realloc to 3,000 bytes */
#define MEMALIGN_LEAKS 30 /* posix_memalign(64, 5,000) */

static void *kept[CALLOC_LEAKS + REALLOC_LEAKS + MEMALIGN_LEAKS];

__attribute__((noinline)) void *leak_with_calloc(void) {
    return calloc(10, 100); /* SITE:calloc */
}

__attribute__((noinline)) void *leak_with_realloc(void) {
    char *p = malloc(100);
    memset(p, 1, 100);
    return realloc(p, 3000); /* SITE:realloc */
}

__attribute__((noinline)) void *leak_with_posix_memalign(void) {
    void *p = NULL;
    if (posix_memalign(&p, 64, 5000) != 0) /* SITE:posix_memalign */
        return NULL;
    return p;
}

/* Allocations freed again: never leak candidates. */
__attribute__((noinline)) void churn(void) {
    for (int i = 0; i < 1000; i++) {
        char *p = malloc(i + 1);
        p[0] = 1;
        char *q = realloc(p, 2 * i + 2);
        free(q);
    }
    void *p = NULL;
    if (posix_memalign(&p, 4096, 8192) == 0)
        free(p);
    free(calloc(100, 100));
}

/* realloc(p, 0): glibc frees p and returns NULL (other allocators return
 * a minimal block, freed here too). Never a leak, never a missed free. */
__attribute__((noinline)) void realloc_to_zero(void) {
    for (int i = 0; i < 100; i++) {
        char *p = malloc(64);
        p[0] = 1;
        free(realloc(p, 0));
    }
}

__attribute__((noinline)) void *grow_slowly_block(void) {
    char *p = malloc(65536); /* SITE:grow */
    memset(p, 2, 65536);
    return p;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    int n = 0;
    for (int i = 0; i < CALLOC_LEAKS; i++)
        kept[n++] = leak_with_calloc();
    for (int i = 0; i < REALLOC_LEAKS; i++)
        kept[n++] = leak_with_realloc();
    for (int i = 0; i < MEMALIGN_LEAKS; i++)
        kept[n++] = leak_with_posix_memalign();
    churn();
    realloc_to_zero();
    if (argc == 3 && strcmp(argv[1], "grow") == 0) {
        long steps = (long)(atof(argv[2]) * 10);
        for (long i = 0; i < steps; i++) {
            grow_slowly_block();
            sleep_ms(100);
        }
    }
    for (int i = 0; i < n; i++)
        if (kept[i] == NULL)
            return 1;
    return 0;
}
