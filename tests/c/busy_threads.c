/* Eight threads, each 1,000 malloc/free pairs of 64-163 bytes and one
 * block of 1,136 bytes kept: 8,000 pairs and 8 known leaks, for checking
 * that several memtraces tracing such programs at once each count exactly
 * their own target's calls. `busy_threads [GO_FILE]`: with GO_FILE, the
 * threads start only once that file exists, so several runs overlap. */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static void *volatile kept[8];

static void *worker(void *arg) {
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(64 + i % 100);
        free(p);
    }
    kept[(long)arg] = malloc(1136);
    return 0;
}

int main(int argc, char **argv) {
    while (argc > 1 && access(argv[1], F_OK) != 0) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, 0);
    }
    pthread_t t[8];
    for (long i = 0; i < 8; i++) pthread_create(&t[i], 0, worker, (void *)i);
    for (int i = 0; i < 8; i++) pthread_join(t[i], 0);
    return 0;
}
