/* 1 MiB of initial-exec TLS: far more than the static TLS surplus glibc
 * keeps for dlopen, so both loaders must refuse it. */
__thread char ie_big[1 << 20] __attribute__((tls_model("initial-exec")));

int ie_big_touch(void) { return ++ie_big[12345]; }
