/* A leak seven frames deep through a shared library, none of it with frame
 * pointers (built -O2 -fomit-frame-pointer, with nofp_lib.c):
 * main -> app_level1 -> nofp_lib_level2 -> nofp_lib_level3 (library)
 * -> app_callback (back in the executable) -> nofp_lib_level5
 * -> nofp_leak_here (library) -> malloc, 10 blocks of 1,000 bytes.
 * It leaks at once: memtrace holds the program after each mapping of code
 * until that file's unwind table is in, so no allocation is walked without. */

void nofp_lib_level2(void (*callback)(int), int n);
void nofp_lib_level5(int n);

static volatile int depth_seen;

__attribute__((noinline)) static void app_callback(int n) {
    nofp_lib_level5(n);
    depth_seen++;
}

__attribute__((noinline)) static void app_level1(int n) {
    nofp_lib_level2(app_callback, n);
    depth_seen++;
}

int main(void) {
    app_level1(10);
    depth_seen++;
    return 0;
}
