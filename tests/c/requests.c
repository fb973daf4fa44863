/* A server-like loop that marks a phase per request: `startup` once, then
 * REQUESTS phases `request`, each allocating 256 bytes and keeping every
 * 4th allocation (a leak of 64 bytes a request on average). With
 * --max-phases the later requests are summed by path; the sums must equal
 * what the program did. Prints the truth line the test reads.
 * Built by the tests: cc -g -O0 -fno-omit-frame-pointer requests.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REQUESTS 3000

__attribute__((noinline)) void memtrace_phase_begin(const char *name) { __asm__ volatile("" ::"r"(name) : "memory"); }
__attribute__((noinline)) void memtrace_phase_end(const char *name) { __asm__ volatile("" ::"r"(name) : "memory"); }

static void *kept[REQUESTS];

int main(void) {
    memtrace_phase_begin("startup");
    char *table = malloc(1 << 16);
    memset(table, 1, 1 << 16);
    memtrace_phase_end("startup");
    long kept_bytes = 0;
    for (int i = 0; i < REQUESTS; i++) {
        memtrace_phase_begin("request");
        char *p = malloc(256);
        memset(p, 2, 256);
        if (i % 4 == 0) {
            kept[i] = p;
            kept_bytes += 256;
        } else {
            free(p);
        }
        memtrace_phase_end("request");
    }
    printf("requests %d kept_bytes %ld\n", REQUESTS, kept_bytes);
    fflush(stdout);
    free(table);
    return 0;
}
