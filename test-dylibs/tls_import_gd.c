/* libc's errno through the dynamic models: DTPMOD64/DTPOFF64 and
 * __tls_get_addr, or a TLS descriptor (built with -mtls-dialect=gnu2). */
extern __thread int errno;

int errno_dyn(void) { return errno; }

void set_errno_dyn(int v) { errno = v; }
