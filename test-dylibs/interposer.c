/* An LD_PRELOAD-style interposer, as gprofng's libgp-collector.so: it
 * defines dlopen itself and forwards to the next definition, found in its
 * constructor with dlvsym(RTLD_NEXT, ...). The system's dlvsym refuses
 * RTLD_NEXT from code it did not load, so under memdl the forward was a
 * null pointer and the first dlopen jumped to address 0. */
#define _GNU_SOURCE
#include <dlfcn.h>

static void *(*next_dlopen)(const char *, int);

__attribute__((constructor)) static void find_next(void) {
    next_dlopen = (void *(*)(const char *, int))dlvsym(RTLD_NEXT, "dlopen", "GLIBC_2.34");
}

void *dlopen(const char *file, int mode) {
    return next_dlopen ? next_dlopen(file, mode) : 0;
}

int found_next_dlopen(void) { return next_dlopen != 0; }
