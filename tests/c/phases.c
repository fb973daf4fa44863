/* A program without marker functions, for --phase-fn: `walk` leaks 4,096
 * bytes in its outermost call, then recurses 100 deep (deeper than the
 * kernel's 64 pending return probes per thread) and sleeps at the bottom;
 * `batch` allocates and frees 1 MiB. With `deep`, walk also allocates at
 * the bottom, where no return probe is left for malloc: those calls must
 * be counted as never returned. main calls walk
 * three times and batch twice, then prints the truth line the test reads.
 * `deep-exit` is `deep` that calls _exit right after the walks: no later
 * allocator call reveals the last unreturned malloc, which is still open
 * at the exit stop.
 * Built by the tests: cc -g -O0 -fno-omit-frame-pointer phases.c */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEPTH 100
#define WALKS 3
#define BATCHES 2

static int deep;

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

__attribute__((noinline)) long walk(int depth) {
    if (depth == DEPTH) {
        char *p = malloc(4096);
        memset(p, 1, 4096);
    }
    if (depth == 0) {
        if (deep)
            memset(malloc(64), 3, 64);
        sleep_ms(30);
        return 1;
    }
    return walk(depth - 1) + 1;
}

__attribute__((noinline)) void batch(void) {
    char *p = malloc(1 << 20);
    memset(p, 2, 1 << 20);
    sleep_ms(20);
    free(p);
}

int main(int argc, char **argv) {
    int exit_after_walks = argc > 1 && strcmp(argv[1], "deep-exit") == 0;
    deep = exit_after_walks || (argc > 1 && strcmp(argv[1], "deep") == 0);
    long sum = 0;
    for (int i = 0; i < WALKS; i++) {
        sum += walk(DEPTH);
        sleep_ms(10);
    }
    if (exit_after_walks)
        _exit(sum == WALKS * (DEPTH + 1) ? 0 : 1);
    for (int i = 0; i < BATCHES; i++)
        batch();
    printf("walks %d depth %d sum %ld batches %d\n", WALKS, DEPTH, sum, BATCHES);
    return sum == WALKS * (DEPTH + 1) ? 0 : 1;
}
