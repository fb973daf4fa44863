/* A pre-fork server: the parent loads its configuration, forks 3 workers,
 * then hands each of them requests through its own pipe (worker i gets
 * 10 * (i + 1)). Each request allocates a scratch buffer (freed) and
 * remembers a session that is never freed: worker i leaks 10 * (i + 1)
 * blocks of 64 + 16 * i bytes from remember_session. Prints
 * `worker PID REQUESTS SESSION_BYTES` per worker. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 3

static void *sessions[64];

__attribute__((noinline)) static void remember_session(int n, size_t size) {
    sessions[n] = malloc(size);
    memset(sessions[n], n, size);
}

__attribute__((noinline)) static void handle(int n, size_t session_size) {
    char *scratch = malloc(4096);
    memset(scratch, 1, 4096);
    remember_session(n, session_size);
    free(scratch);
}

__attribute__((noinline)) static void serve(int fd, int index) {
    size_t session_size = 64 + 16 * index;
    int n = 0;
    char request;
    while (read(fd, &request, 1) == 1)
        handle(n++, session_size);
    printf("worker %d %d %zu\n", getpid(), n, session_size);
    fflush(stdout);
}

int main(void) {
    char *config = malloc(1000); /* the parent's, inherited by every worker */
    strcpy(config, "workers=3");
    int fds[WORKERS][2];
    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        if (pipe(fds[i]) != 0)
            return 1;
        pids[i] = fork();
        if (pids[i] == 0) {
            for (int j = 0; j <= i; j++)
                close(fds[j][1]);
            serve(fds[i][0], i);
            exit(0);
        }
        close(fds[i][0]);
    }
    for (int i = 0; i < WORKERS; i++) {
        for (int r = 0; r < 10 * (i + 1); r++)
            if (write(fds[i][1], "r", 1) != 1)
                return 1;
        close(fds[i][1]);
    }
    for (int i = 0; i < WORKERS; i++)
        waitpid(pids[i], NULL, 0);
    return config[0] == 'w' ? 0 : 1;
}
