/* Exercises the dlopen family and prints a transcript without addresses:
   run with and without libmemdl_preload.so, the transcripts must match.
   Usage: main DIR            (DIR holds the test libraries)
          main DIR textrel    (only opens libtextrel.so) */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dir;
static char buf[4096];

static const char *lib(const char *name) {
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

/* The same, in a buffer of the calling thread's own. */
static const char *lib_path(const char *name) {
    static __thread char own[4096];
    snprintf(own, sizeof own, "%s/%s", dir, name);
    return own;
}

/* dlerror's text with DIR replaced by "$DIR", or "(null)". */
static const char *err(void) {
    static char out[4096];
    const char *e = dlerror();
    if (!e) return "(null)";
    const char *at = strstr(e, dir);
    if (!at) return e;
    snprintf(out, sizeof out, "%.*s$DIR%s", (int)(at - e), e, at + strlen(dir));
    return out;
}

static const char *base(const char *path) {
    const char *s = path ? strrchr(path, '/') : NULL;
    return s ? s + 1 : (path ? path : "(null)");
}

typedef int (*fn_t)(void);
static fn_t fn(void *h, const char *name) { return (fn_t)dlsym(h, name); }

struct found { const char *name; int seen; unsigned long addr; unsigned long first_load; };

static int each(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct found *f = data;
    if (info->dlpi_name && strstr(info->dlpi_name, dir)) {
        printf("  phdr: %s (%d headers)\n", base(info->dlpi_name), info->dlpi_phnum);
        if (strcmp(base(info->dlpi_name), f->name) == 0) {
            f->seen = 1;
            f->addr = info->dlpi_addr;
            for (int i = 0; i < info->dlpi_phnum; i++)
                if (info->dlpi_phdr[i].p_type == PT_LOAD) {
                    f->first_load = info->dlpi_phdr[i].p_vaddr;
                    break;
                }
        }
    }
    return 0;
}

static void *thread_main(void *h) {
    printf("thread: dlerror before = %s\n", dlerror() ? "message" : "(null)");
    void *p = dlsym(h, "thread_missing");
    printf("thread: dlsym missing = %s\n", p ? "found" : "NULL");
    printf("thread: dlerror = %s\n", err());
    return NULL;
}

/* Many threads open, look up in and close the same library at once, and
   look up through RTLD_DEFAULT meanwhile: every call must succeed. */
static void *stress(void *arg) {
    long bad = 0;
    for (int i = 0; i < 200; i++) {
        void *h = dlopen(lib_path((const char *)arg), RTLD_NOW);
        int (*f)(int) = h ? (int (*)(int))dlsym(h, "ph_value") : NULL;
        if (!f || f(i) != i * 3) bad++;
        if (dlsym(RTLD_DEFAULT, "ph_value_missing")) bad++;
        (void)dlerror();
        if (!h || dlclose(h) != 0) bad++;
    }
    return (void *)bad;
}

static int textrel_only(void) {
    void *h = dlopen(lib("libtextrel.so"), RTLD_NOW);
    if (!h) {
        printf("textrel: dlopen failed: %s\n", err());
        return 1;
    }
    printf("textrel: textrel_fn = %d\n", fn(h, "textrel_fn")());
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc < 2) return 2;
    dir = argv[1];
    if (argc > 2 && strcmp(argv[2], "textrel") == 0) return textrel_only();

    /* Not loaded yet: RTLD_NOLOAD finds nothing. */
    void *h = dlopen(lib("libpa.so"), RTLD_NOW | RTLD_NOLOAD);
    printf("noload before load: %s, ", h ? "handle" : "NULL");
    printf("dlerror %s\n", err());

    void *pa = dlopen(lib("libpa.so"), RTLD_NOW | RTLD_LOCAL);
    printf("pa: %s\n", pa ? "opened" : err());
    if (!pa) return 1;
    printf("pa_value = %d, pa_counter = %d\n", fn(pa, "pa_value")(), *(int *)dlsym(pa, "pa_counter"));
    printf("pa_ver = %d, pa_ver@VERS_1 = %d, pa_ver@VERS_2 = %d\n", fn(pa, "pa_ver")(),
           ((fn_t)dlvsym(pa, "pa_ver", "VERS_1"))(), ((fn_t)dlvsym(pa, "pa_ver", "VERS_2"))());
    /* (Arguments are evaluated in no fixed order: a call whose error is
       printed is made in a statement of its own.) */
    void *p = dlvsym(pa, "pa_ver", "VERS_9");
    printf("dlvsym VERS_9: %s, ", p ? "found" : "NULL");
    printf("dlerror %s\n", err());
    p = dlsym(pa, "missing");
    printf("dlsym missing: %s, ", p ? "found" : "NULL");
    printf("dlerror %s\n", err());
    printf("dlerror again: %s\n", err());
    printf("RTLD_DEFAULT pa_value while local: %s\n", dlsym(RTLD_DEFAULT, "pa_value") ? "found" : "NULL");
    (void)dlerror();

    /* Same library by path (again), by soname, through dlmopen(LM_ID_BASE). */
    void *pa_lazy = dlopen(lib("libpa.so"), RTLD_LAZY);
    void *pa_soname = dlopen("libpa.so", RTLD_NOW);
    void *pa_m = dlmopen(LM_ID_BASE, lib("libpa.so"), RTLD_NOW);
    printf("same handle: lazy %d, soname %d, dlmopen %d\n", pa_lazy == pa, pa_soname == pa, pa_m == pa);

    /* DT_NEEDED on a library the program opened. */
    void *pb = dlopen(lib("libpb.so"), RTLD_NOW);
    printf("pb: %s, pb_value = %d\n", pb ? "opened" : err(), pb ? fn(pb, "pb_value")() : -1);
    printf("dlsym(pb, pa_value) via its DT_NEEDED: %s\n", dlsym(pb, "pa_value") == dlsym(pa, "pa_value") ? "same" : "different");

    /* Promotion to the global scope with RTLD_NOLOAD | RTLD_GLOBAL. */
    void *pa_global = dlopen(lib("libpa.so"), RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
    printf("noload|global: %s\n", pa_global == pa ? "same handle" : "other");
    printf("RTLD_DEFAULT pa_value now: %s\n", dlsym(RTLD_DEFAULT, "pa_value") == dlsym(pa, "pa_value") ? "same" : "different");
    void *self = dlopen(NULL, RTLD_NOW);
    printf("dlopen(NULL) pa_value: %s\n", dlsym(self, "pa_value") == dlsym(pa, "pa_value") ? "same" : "different");

    /* An import only the global libpa satisfies. */
    void *pc = dlopen(lib("libpc.so"), RTLD_NOW);
    printf("pc: %s, pc_value = %d\n", pc ? "opened" : err(), pc ? fn(pc, "pc_value")() : -1);

    /* Not found. */
    p = dlopen("libmemdl-no-such-lib.so", RTLD_NOW);
    printf("missing bare name: %s, ", p ? "handle" : "NULL");
    printf("dlerror %s\n", err());
    p = dlopen(lib("no-such-lib.so"), RTLD_NOW);
    printf("missing path: %s, ", p ? "handle" : "NULL");
    printf("dlerror %s\n", err());
    printf("libc by soname, noload: %s\n", dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD) ? "handle" : "NULL");

    /* Search by name through the caller's DT_RUNPATH ($ORIGIN): libpi's
       (sub/), the program's own (sub2/). */
    p = dlopen("libpj.so", RTLD_NOW);
    printf("libpj by name from the program: %s, ", p ? "handle" : "NULL");
    printf("dlerror %s\n", err());
    void *pi = dlopen(lib("libpi.so"), RTLD_NOW);
    printf("pi: %s, ", pi ? "opened" : err());
    printf("libpj by name from libpi: pj_value = %d\n", pi ? fn(pi, "pi_open_pj")() : -1);
    void *pk = dlopen("libpk.so", RTLD_NOW);
    printf("libpk by name from the program: %s, pj_value = %d\n", pk ? "opened" : err(), pk ? fn(pk, "pj_value")() : -1);
    if (pk) dlclose(pk);
    if (pi) dlclose(pi);

    /* RTLD_NODELETE keeps state across dlclose. */
    void *pd = dlopen(lib("libpd.so"), RTLD_NOW | RTLD_NODELETE);
    ((void (*)(int))dlsym(pd, "pd_set"))(42);
    printf("pd dlclose = %d\n", dlclose(pd));
    pd = dlopen(lib("libpd.so"), RTLD_NOW | RTLD_NOLOAD);
    printf("pd after dlclose: %s, pd_get = %d\n", pd ? "still loaded" : "gone", pd ? fn(pd, "pd_get")() : -1);

    /* Without it, the last dlclose unloads (finalisers run) and a new
       dlopen starts afresh. */
    void *pe = dlopen(lib("libpe.so"), RTLD_NOW);
    void *pe2 = dlopen(lib("libpe.so"), RTLD_NOW);
    ((void (*)(int))dlsym(pe, "pe_set"))(5);
    printf("pe dlclose 1 = %d\n", dlclose(pe2));
    printf("pe after one dlclose: %s, pe_get = %d\n", dlopen(lib("libpe.so"), RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "gone", fn(pe, "pe_get")());
    dlclose(pe); /* the NOLOAD reference */
    printf("pe dlclose 2 = %d\n", dlclose(pe));
    printf("pe after last dlclose: %s\n", dlopen(lib("libpe.so"), RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "gone");
    pe = dlopen(lib("libpe.so"), RTLD_NOW);
    printf("pe reopened: pe_get = %d\n", fn(pe, "pe_get")());
    dlclose(pe);

    /* RTLD_NEXT: from a loaded library, and from the program. */
    void *pg = dlopen(lib("libpg.so"), RTLD_NOW);
    printf("pg abs(-5) = %d\n", ((int (*)(int))dlsym(pg, "abs"))(-5));
    printf("pg RTLD_DEFAULT own symbol = %d\n", fn(pg, "pg_default_own")());
    int (*next_abs)(int) = (int (*)(int))dlsym(RTLD_NEXT, "abs");
    printf("program RTLD_NEXT abs(-3) = %d\n", next_abs ? next_abs(-3) : -1);

    /* dladdr, dladdr1, dlinfo, dl_iterate_phdr. */
    void *pa_value = dlsym(pa, "pa_value");
    Dl_info info;
    int ok = dladdr(pa_value, &info);
    printf("dladdr: %d %s %s exact=%d\n", ok, base(info.dli_fname), info.dli_sname ? info.dli_sname : "(null)", info.dli_saddr == pa_value);
    ok = dladdr((char *)pa_value + 1, &info);
    printf("dladdr +1: %d %s inside=%d\n", ok, info.dli_sname ? info.dli_sname : "(null)", info.dli_saddr == pa_value);
    struct link_map *lm = NULL;
    ok = dladdr1(pa_value, &info, (void **)&lm, RTLD_DL_LINKMAP);
    printf("dladdr1 linkmap: %d %s\n", ok, lm ? base(lm->l_name) : "(null)");
    const ElfW(Sym) *sym = NULL;
    ok = dladdr1(pa_value, &info, (void **)&sym, RTLD_DL_SYMENT);
    printf("dladdr1 syment: %d size>0=%d func=%d\n", ok, sym && sym->st_size > 0, sym && ELF64_ST_TYPE(sym->st_info) == STT_FUNC);
    struct link_map *lm2 = NULL;
    ok = dlinfo(pa, RTLD_DI_LINKMAP, &lm2);
    printf("dlinfo linkmap: %d %s same=%d\n", ok, lm2 ? base(lm2->l_name) : "(null)", lm2 == lm);
    char origin[4096] = "";
    dlinfo(pa, RTLD_DI_ORIGIN, origin);
    printf("dlinfo origin is DIR: %d\n", strcmp(origin, dir) == 0);
    struct found f = {"libpa.so", 0, 0, 0};
    dl_iterate_phdr(each, &f);
    printf("dl_iterate_phdr libpa: seen=%d base matches dladdr=%d linkmap l_addr=%d\n", f.seen,
           f.addr + f.first_load == (unsigned long)info.dli_fbase, lm && lm->l_addr == f.addr);

    /* dlerror is per thread. */
    (void)dlsym(pa, "main_missing");
    pthread_t t;
    pthread_create(&t, NULL, thread_main, pa);
    pthread_join(t, NULL);
    printf("main: dlerror = %s\n", err());

    pthread_t ts[4];
    long bad = 0;
    for (int i = 0; i < 4; i++) pthread_create(&ts[i], NULL, stress, "libph.so");
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(ts[i], &r);
        bad += (long)r;
    }
    printf("4 threads x 200 dlopen/dlsym/dlclose of libph: %ld failures, after: %s\n", bad,
           dlopen(lib("libph.so"), RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "gone");

    /* Closing: pc, pg, pb (libpa stays: the program holds it), then every
       reference to libpa. */
    ok = dlclose(pc);
    printf("dlclose pc %d", ok);
    ok = dlclose(pg);
    printf(" pg %d", ok);
    ok = dlclose(pb);
    printf(" pb %d\n", ok);
    printf("pa after pb closed: %s\n", dlopen(lib("libpa.so"), RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "gone");
    dlclose(pa); /* that NOLOAD reference */
    dlclose(pa_global);
    dlclose(pa_m);
    dlclose(pa_soname);
    dlclose(pa_lazy);
    printf("pa with one reference left: %s\n", dlopen(lib("libpa.so"), RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "gone");
    dlclose(pa); /* that NOLOAD reference */
    printf("last dlclose of pa = %d\n", dlclose(pa));
    printf("pa after last dlclose: %s\n", dlopen(lib("libpa.so"), RTLD_NOW | RTLD_NOLOAD) ? "loaded" : "gone");
    printf("done\n");
    return 0;
}
