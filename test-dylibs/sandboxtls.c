/* Thread-local state through __tls_get_addr (general-dynamic model), no
 * libc: memdl's own __tls_get_addr is a loader service a sandbox keeps. */

__attribute__((tls_model("global-dynamic"))) __thread int tls_calls;

int count_call(void) { return ++tls_calls; }
