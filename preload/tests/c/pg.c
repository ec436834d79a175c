/* libpg.so: an abs() wrapper finding the next abs with RTLD_NEXT, and a
   lookup of its own symbol through RTLD_DEFAULT (the caller's scope). */
#define _GNU_SOURCE
#include <dlfcn.h>
int pg_own(void) { return 77; }
int abs(int x) {
    int (*next)(int) = (int (*)(int))dlsym(RTLD_NEXT, "abs");
    return next ? next(x) + 1000 : -1;
}
int pg_default_own(void) {
    int (*f)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "pg_own");
    return f ? f() : -1;
}
