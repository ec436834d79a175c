/* Thread-local variables, compiled as -fPIC code with the compiler's
 * default dialect: TLS descriptors (R_AARCH64_TLSDESC) on AArch64,
 * __tls_get_addr (DTPMOD64/DTPOFF64) on x86_64. Other rows of build.rs
 * build the same source with the other dialect. */
#include <stdint.h>

__thread int tls_counter = 7;          /* .tdata */
__thread long tls_zero[4];             /* .tbss */
static __thread int tls_local = 100;   /* local: symbol-less relocation */
__thread _Alignas(64) char tls_aligned[64] = "aligned";
/* Read by the register-preservation probe (tls_regs_aarch64.S). */
__thread long tls_probe = 0x5eed;

int tls_bump(void) { return ++tls_counter; }
int tls_get(void) { return tls_counter; }
int *tls_counter_addr(void) { return &tls_counter; }

long tls_zero_sum(void) {
    long s = 0;
    for (int i = 0; i < 4; i++)
        s += tls_zero[i]++;
    return s;
}

int tls_local_bump(void) { return tls_local += 10; }

/* 1 when the over-aligned variable is aligned and initialised. */
int tls_aligned_ok(void) {
    return (uintptr_t)tls_aligned % 64 == 0 && tls_aligned[0] == 'a' &&
           tls_aligned[6] == 'd' && tls_aligned[7] == 0;
}
