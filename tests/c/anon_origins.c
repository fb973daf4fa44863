// Anonymous memory of four origins, all resident at exit: a buffer the
// program maps itself (map_buffer), a large malloc (glibc serves it with
// its own mmap), four threads each writing deep into its own stack, and a
// brk heap of small blocks. Exits with _exit while the threads still
// wait, so the exit stop sees every page still mapped. Prints what it made, for the test to compare.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BUFFER_BYTES (24u << 20)
#define MALLOC_BYTES (12u << 20)
#define THREADS 4
#define STACK_TOUCH (1u << 20)

__attribute__((noinline)) static char *map_buffer(size_t bytes) {
    char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        _exit(1);
    }
    return p;
}

static pthread_barrier_t touched;

// Writes STACK_TOUCH bytes deep into its stack, then waits for the exit.
static void *deep(void *arg) {
    volatile char frame[STACK_TOUCH];
    for (size_t i = 0; i < sizeof frame; i += 4096) frame[i] = 1;
    pthread_barrier_wait(&touched);
    for (;;) pause();
    return arg;
}

int main(void) {
    char *buffer = map_buffer(BUFFER_BYTES);
    memset(buffer, 1, BUFFER_BYTES);
    char *block = malloc(MALLOC_BYTES);
    memset(block, 2, MALLOC_BYTES);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 4u << 20);
    pthread_barrier_init(&touched, NULL, THREADS + 1);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&threads[i], &attr, deep, NULL);
    pthread_barrier_wait(&touched);
    // Small blocks from the main arena: the brk heap.
    for (int i = 0; i < 4096; i++) memset(malloc(1000), 3, 1000);
    printf("buffer %u malloc %u threads %d stack_touch %u\n", BUFFER_BYTES, MALLOC_BYTES, THREADS, STACK_TOUCH);
    fflush(stdout);
    _exit(0);
}
