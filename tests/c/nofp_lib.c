/* The library half of nofp_main.c, built -O2 -fomit-frame-pointer like
 * nofp_main.c: its functions keep no frame pointer, so only unwind tables
 * can walk through them. Each is noinline and does work after its call, so
 * the compiler keeps every frame (no inlining, no tail call). */
#include <stdlib.h>

void *nofp_kept[64];
static volatile int depth_seen;

__attribute__((noinline)) void nofp_leak_here(int n) {
    for (int i = 0; i < n; i++)
        nofp_kept[i] = malloc(1000);
    depth_seen++;
}

__attribute__((noinline)) void nofp_lib_level5(int n) {
    nofp_leak_here(n);
    depth_seen++;
}

/* Calls back into the executable: the stack crosses mappings twice. */
__attribute__((noinline)) void nofp_lib_level3(void (*callback)(int), int n) {
    callback(n);
    depth_seen++;
}

__attribute__((noinline)) void nofp_lib_level2(void (*callback)(int), int n) {
    nofp_lib_level3(callback, n);
    depth_seen++;
}
