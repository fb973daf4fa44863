// Exceptions thrown and caught while allocating, in code without frame
// pointers (g++ -O2 -fomit-frame-pointer): memtrace unwinds every
// allocation's stack with the .eh_frame tables, including allocations made
// by destructors while the C++ runtime unwinds the stack (libgcc_s's
// _Unwind_RaiseException frames, which save every register). Then one
// known leak: 4,321 bytes in keep_one <- after_the_storm <- main.
#include <cstdlib>
#include <stdexcept>
#include <string>

static volatile int caught;
static void *volatile kept;

struct AllocatesOnUnwind {
    ~AllocatesOnUnwind() {
        // Runs during stack unwinding: malloc's caller chain goes through
        // the unwinder's own frames.
        void *p = std::malloc(48);
        std::free(p);
    }
};

__attribute__((noinline)) static void descend(int depth) {
    AllocatesOnUnwind guard;
    std::string *s = new std::string(64 + depth, 'x');
    if (depth == 0) {
        delete s;
        throw std::runtime_error("bottom reached");
    }
    try {
        descend(depth - 1);
    } catch (...) {
        delete s;
        throw;
    }
    delete s;
}

__attribute__((noinline)) static void storm() {
    for (int i = 0; i < 200; i++) {
        try {
            descend(8);
        } catch (const std::exception &) {
            caught++;
        }
    }
}

__attribute__((noinline)) static void keep_one() { kept = std::malloc(4321); }

__attribute__((noinline)) static void after_the_storm() {
    keep_one();
    caught++;
}

int main() {
    storm();
    after_the_storm();
    return caught == 201 ? 0 : 1;
}
