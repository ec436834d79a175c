/* libc's errno, a thread-local variable in libc's static TLS block,
 * reached with the initial-exec model (R_X86_64_TPOFF64 against
 * errno@GLIBC_PRIVATE), as libresolv and libnsl do. */
extern __thread int errno __attribute__((tls_model("initial-exec")));

int errno_ie(void) { return errno; }

void set_errno_ie(int v) { errno = v; }
