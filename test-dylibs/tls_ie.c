/* Initial-exec TLS: needs room in every thread's static TLS area, which only
 * the system loader can reserve (R_X86_64_TPOFF64 and DF_STATIC_TLS,
 * R_AARCH64_TLS_TPREL). */
__thread int ie_value __attribute__((tls_model("initial-exec"))) = 5;

int ie_next(void) { return ++ie_value; }
