/* Page faults the kernel takes for the program: read() of an 8 MiB file
 * into a fresh, never-touched anonymous mapping. Each of its 2,048 pages is
 * first touched by the kernel's copy to user memory, in kernel mode.
 * `read_into FILE` (written first if missing). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define BYTES (8 << 20)

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: read_into FILE\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        char *block = malloc(BYTES);
        memset(block, 7, BYTES);
        fd = open(argv[1], O_RDWR | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, block, BYTES) != BYTES) { perror(argv[1]); return 1; }
        free(block);
        lseek(fd, 0, SEEK_SET);
    }
    char *buf = mmap(0, BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) { perror("mmap"); return 1; }
    madvise(buf, BYTES, MADV_NOHUGEPAGE);
    ssize_t got = 0;
    while (got < BYTES) {
        ssize_t n = read(fd, buf + got, BYTES - got);
        if (n <= 0) { perror("read"); return 1; }
        got += n;
    }
    printf("read %zd bytes, last %d\n", got, buf[BYTES - 1]);
    return 0;
}
