/* A library for the sandbox policy tests: no libc, two host imports.
 * `host_counter` (data) is what its constructor increments, so whether the
 * constructor ran is observable by the host; `host_hook` (a function) is
 * the import a sandbox may or may not grant. */

extern int host_counter;
extern int host_hook(int);

__attribute__((constructor)) static void sandboxed_init(void) { host_counter += 1; }

int call_hook(int x) { return host_hook(x) + 1; }
