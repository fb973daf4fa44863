/* Eight threads that each churn small blocks through malloc/free, leak one
 * 1,000-byte block on purpose, and exit; main joins them and exits. When a
 * thread exits, glibc returns its per-thread cache (tcache) with free():
 * blocks the program freed long ago, and the cache's own struct, which
 * glibc allocated without calling malloc. Nothing is printed (stdio's
 * buffer would be a live block of its own).
 * Built by the tests: cc -g -O0 -fno-omit-frame-pointer threads.c -lpthread */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define LEAK_BYTES 1000

static void *kept[THREADS];

__attribute__((noinline)) void *leak_in_thread(void) {
    char *p = malloc(LEAK_BYTES); /* SITE:thread-leak */
    memset(p, 3, LEAK_BYTES);
    return p;
}

static void *worker(void *arg) {
    long i = (long)arg;
    for (int n = 0; n < 5; n++) {
        char *p = malloc(32 + n * 16);
        p[0] = 1;
        free(p);
    }
    kept[i] = leak_in_thread();
    return NULL;
}

int main(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i) != 0)
            return 1;
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < THREADS; i++)
        if (kept[i] == NULL)
            return 1;
    return 0;
}
