/* Initial-exec TLS of the library's own (R_X86_64_TPOFF64 and
 * DF_STATIC_TLS, R_AARCH64_TLS_TPREL): every thread, including threads
 * that existed before the load, must find its own copy of the template at
 * one fixed offset from its thread pointer. */
__thread int ie_value __attribute__((tls_model("initial-exec"))) = 5;
__thread long ie_table[4] __attribute__((tls_model("initial-exec"))) = {10, 20, 30, 40};
__thread char ie_zero[64] __attribute__((tls_model("initial-exec")));

int ie_next(void) { return ++ie_value; }

/* The template's values plus the zeroed tail: 100 in a fresh thread. */
long ie_sum(void) {
    long s = 0;
    for (int i = 0; i < 4; i++) s += ie_table[i];
    for (int i = 0; i < 64; i++) s += ie_zero[i];
    return s;
}

void ie_bump(long by) {
    for (int i = 0; i < 4; i++) ie_table[i] += by;
    ie_zero[63] = 1;
}
