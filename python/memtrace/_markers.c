/* memtrace's phase markers as a shared library: the Python module (and any
 * program that dlopens it) calls these two functions, memtrace's uprobes on
 * them read the phase name. They do nothing else: untraced, a phase costs two
 * calls of an empty function.
 *
 * Built by memtrace's build.rs (memtrace embeds it and writes it out for the
 * programs it runs) and by the package's setup.py when `pip install` finds a
 * C compiler. Built with -O0: identical bodies must not be folded into one
 * address (gcc's -fipa-icf at -O2), or begin and end would be one probe, and
 * each starts with `push %rbp` rather than a bare `ret`. */
__attribute__((noinline, visibility("default"))) void memtrace_phase_begin(const char *name) {
    __asm__ volatile("" ::"r"(name) : "memory");
}

__attribute__((noinline, visibility("default"))) void memtrace_phase_end(const char *name) {
    __asm__ volatile("" ::"r"(name) : "memory");
}
