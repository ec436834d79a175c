/* Thread-local storage in the dynamic models. Built twice by build.rs: with
 * the traditional dialect (general dynamic for the exported variables,
 * local dynamic for the static ones, both through __tls_get_addr) and with
 * TLS descriptors (-mtls-dialect=gnu2). Every thread must see the template:
 * tdata copied, tbss zeroed, alignment kept. */
#include <stdint.h>
#include <string.h>

#define LOCAL_DYNAMIC __attribute__((tls_model("local-dynamic")))

/* Exported: general dynamic (DTPMOD64 + DTPOFF64 naming the symbol). */
__thread int tls_counter = 42;
__thread char tls_tag[16] = "memdl-tls";
__thread long tls_big[64]; /* tbss */

/* Not exported: local dynamic (one module lookup plus constant offsets). */
static __thread int hidden_count LOCAL_DYNAMIC = 7;
static __thread long hidden_zero[8] LOCAL_DYNAMIC;
static __thread double aligned_val __attribute__((aligned(64))) LOCAL_DYNAMIC = 1.5;

int tls_counter_next(void) { return ++tls_counter; }
int tls_hidden_next(void) { return ++hidden_count; }
const char *tls_tag_get(void) { return tls_tag; }
uintptr_t tls_counter_addr(void) { return (uintptr_t)&tls_counter; }
uintptr_t tls_aligned_addr(void) { return (uintptr_t)&aligned_val; }
double tls_aligned_get(void) { return aligned_val; }

/* Sum of every tbss word: 0 in a fresh thread. */
long tls_zero_sum(void) {
    long s = 0;
    for (int i = 0; i < 64; i++)
        s += tls_big[i];
    for (int i = 0; i < 8; i++)
        s += hidden_zero[i];
    return s;
}

/* Mixes every variable `rounds` times; the result depends only on the
 * thread's own history, so any sharing between threads changes it. */
long tls_hammer(int rounds, long seed) {
    for (int i = 0; i < rounds; i++) {
        tls_counter += 1;
        hidden_count += 2;
        tls_big[i & 63] += seed + i;
        hidden_zero[i & 7] ^= seed * i;
        aligned_val += 0.5;
        tls_tag[i & 7] = (char)('a' + (seed + i) % 26);
    }
    long h = tls_counter * 1000003L + hidden_count;
    for (int i = 0; i < 64; i++)
        h = h * 31 + tls_big[i];
    for (int i = 0; i < 8; i++)
        h = h * 17 + hidden_zero[i];
    h = h * 7 + (long)aligned_val;
    for (int i = 0; i < 8; i++)
        h = h * 3 + tls_tag[i];
    return h;
}

/* Values live in vector and integer registers across descriptor calls,
 * which by the ABI clobber nothing but the result register: a descriptor
 * function that lost any of them changes the result. */
double tls_registers_survive(double a, double b, long i, long j) {
    double x = a * b, y = a + b, z = a - b, w = a / b;
    long k = i * j, l = i + j;
    tls_counter += (int)x;
    hidden_count += (int)y;
    tls_big[1] += (long)z + k;
    aligned_val += w + (double)l;
    return x + y * 2 + z * 3 + w * 4 + (double)(k * 5 + l * 6) + tls_counter;
}
