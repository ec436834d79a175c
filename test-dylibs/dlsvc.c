/* Loader services called from loaded code: dladdr, dlsym, dlerror,
 * dl_iterate_phdr and __tls_get_addr. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <string.h>

__thread int dlsvc_tls = 11;

int dlsvc_marker(int x) { return x * 3; }

/* What dladdr says about `addr`; 0 when it knows nothing. */
int dlsvc_dladdr(const void *addr, const char **fname, void **fbase, const char **sname,
                 void **saddr) {
    Dl_info info;
    memset(&info, 0, sizeof info);
    int r = dladdr(addr, &info);
    *fname = info.dli_fname;
    *fbase = info.dli_fbase;
    *sname = info.dli_sname;
    *saddr = info.dli_saddr;
    return r;
}

/* dladdr on one of this library's own functions. */
int dlsvc_dladdr_self(const char **sname, void **fbase) {
    Dl_info info;
    memset(&info, 0, sizeof info);
    int r = dladdr((const void *)((uintptr_t)&dlsvc_marker + 1), &info);
    *sname = info.dli_sname;
    *fbase = info.dli_fbase;
    return r;
}

void *dlsvc_dlsym_default(const char *name) { return dlsym(RTLD_DEFAULT, name); }
void *dlsvc_dlsym_next(const char *name) { return dlsym(RTLD_NEXT, name); }

/* dlsym through the handle of the global scope (dlopen(NULL)). */
void *dlsvc_dlsym_global_handle(const char *name) {
    void *h = dlopen(NULL, RTLD_NOW);
    if (!h)
        return 0;
    void *p = dlsym(h, name);
    dlclose(h);
    return p;
}

const char *dlsvc_dlerror(void) { return dlerror(); }

struct find {
    uintptr_t addr;
    uintptr_t base;
    const char *name;
    int phnum;
    int objects;
    int found_at;
};

static int visit(struct dl_phdr_info *info, size_t size, void *data) {
    struct find *f = data;
    (void)size;
    f->objects++;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && f->addr >= lo && f->addr < lo + ph->p_memsz &&
            f->found_at == 0) {
            f->base = info->dlpi_addr;
            f->name = info->dlpi_name;
            f->phnum = info->dlpi_phnum;
            f->found_at = f->objects;
        }
    }
    return 0;
}

/* Walks every object; reports the one holding this library's code, at which
 * position it came and how many objects there were. */
int dlsvc_iterate(uintptr_t *base, const char **name, int *phnum, int *objects) {
    struct find f = {(uintptr_t)&dlsvc_marker, 0, 0, 0, 0, 0};
    dl_iterate_phdr(visit, &f);
    *base = f.base;
    *name = f.name;
    *phnum = f.phnum;
    *objects = f.objects;
    return f.found_at;
}

/* The functions this library was bound to, to check which loader's they are. */
extern void *__tls_get_addr(void *);
void dlsvc_bound(void **out) {
    out[0] = (void *)&dladdr;
    out[1] = (void *)&dlsym;
    out[2] = (void *)&dlerror;
    out[3] = (void *)&dl_iterate_phdr;
    out[4] = (void *)&__tls_get_addr;
}

int *dlsvc_tls_addr(void) { return &dlsvc_tls; }

/* dlsym through the handle of one system library. */
void *dlsvc_dlsym_in(const char *lib, const char *name) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return (void *)1;
    void *p = dlsym(h, name);
    dlclose(h);
    return p;
}
