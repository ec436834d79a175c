/* libpi.so: DT_RUNPATH $ORIGIN/sub; opens libpj.so by name from there. */
#include <dlfcn.h>
int pi_open_pj(void) {
    void *h = dlopen("libpj.so", RTLD_NOW);
    if (!h) return -1;
    int (*f)(void) = (int (*)(void))dlsym(h, "pj_value");
    int v = f ? f() : -2;
    dlclose(h);
    return v;
}
