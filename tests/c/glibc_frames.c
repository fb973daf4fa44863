/* Leaks made inside glibc's own code (built without frame pointers, as
 * Debian ships it), from a program built without them too:
 * - qsort calls compare_and_leak, which strdup()s: the stack goes
 *   strdup <- compare_and_leak <- (glibc's sort) <- qsort <- sort_and_leak <- main;
 * - fopen() allocates its FILE inside glibc: malloc's caller is glibc's
 *   fopen code, called from open_and_leak <- main.
 * The leaks are known: 3 strdup'd strings of 32 bytes, one FILE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile int leaked;

__attribute__((noinline)) static int compare_and_leak(const void *a, const void *b) {
    if (leaked < 3) {
        leaked++;
        /* 31 characters and the NUL: 32 bytes each. */
        if (!strdup("leaked from a qsort callback...")) abort();
    }
    return *(const int *)a - *(const int *)b;
}

__attribute__((noinline)) static void sort_and_leak(void) {
    int v[16];
    for (int i = 0; i < 16; i++) v[i] = 16 - i;
    qsort(v, 16, sizeof v[0], compare_and_leak);
    leaked += v[0] - 1; /* v[0] == 1 */
}

__attribute__((noinline)) static void open_and_leak(void) {
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) abort();
    leaked++; /* never closed: its FILE stays allocated */
}

int main(void) {
    sort_and_leak();
    open_and_leak();
    return leaked == 4 ? 0 : 1;
}
