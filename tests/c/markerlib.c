/* A shared library exporting memtrace's phase markers (the executable that
 * uses it, uselib.c, does not): memtrace must find them in the library.
 * Built by the tests: cc -shared -fPIC -g -fno-omit-frame-pointer */
__attribute__((noinline)) void memtrace_phase_begin(const char *name) { __asm__ volatile("" ::"r"(name) : "memory"); }
__attribute__((noinline)) void memtrace_phase_end(const char *name) { __asm__ volatile("" ::"r"(name) : "memory"); }
