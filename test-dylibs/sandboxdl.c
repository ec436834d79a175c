/* Imports dlsym, dladdr and dlerror, which memdl provides itself; no libc.
 * Under a deny-host-lookups policy a loaded library must not be able to
 * reach the host's symbols through them unless the host grants them. */

#define RTLD_DEFAULT ((void *)0)

typedef struct {
    const char *dli_fname;
    void *dli_fbase;
    const char *dli_sname;
    void *dli_saddr;
} dl_info;

extern void *dlsym(void *handle, const char *name);
extern int dladdr(const void *addr, dl_info *info);
extern char *dlerror(void);

/* The address the host's dynamic scope gives `name`. */
void *find_host_symbol(const char *name) { return dlsym(RTLD_DEFAULT, name); }

int own_base_known(void) {
    dl_info info;
    return dladdr((const void *)own_base_known, &info) != 0 && info.dli_fbase != 0;
}

const char *last_error(void) { return dlerror(); }
