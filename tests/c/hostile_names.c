/* Phase markers called with names a hostile or buggy program could pass:
 * longer than memtrace keeps, carrying a terminal escape sequence, and
 * pointing at no memory. memtrace must keep a capped, printable name for
 * each and never trust the bytes. Defines the markers itself.
 * Built by the tests: cc -g -O0 -fno-omit-frame-pointer hostile_names.c */
#include <string.h>

__attribute__((noinline)) void memtrace_phase_begin(const char *name) { __asm__ volatile("" ::"r"(name) : "memory"); }
__attribute__((noinline)) void memtrace_phase_end(const char *name) { __asm__ volatile("" ::"r"(name) : "memory"); }

static void phase(const char *name) {
    memtrace_phase_begin(name);
    memtrace_phase_end(name);
}

int main(void) {
    static char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    phase(long_name);
    phase("\x1b[2J\x1b[31mred\n");
    phase((const char *)0x10);
    return 0;
}
