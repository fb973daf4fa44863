/* Marks one phase through the markers of libmtmark.so (markerlib.c),
 * leaking 8,192 bytes inside it. It waits 300 ms first: memtrace probes a
 * library's markers when it reads the library's mmap event. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

void memtrace_phase_begin(const char *name);
void memtrace_phase_end(const char *name);

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(void) {
    sleep_ms(300);
    memtrace_phase_begin("libphase");
    memset(malloc(8192), 1, 8192);
    sleep_ms(50);
    memtrace_phase_end("libphase");
    return 0;
}
