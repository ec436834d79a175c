/* GNU indirect functions, without libc (resolvers run before the library
 * could call into it safely).
 *
 * - which_hidden: a hidden ifunc; calls to it go through a PLT slot that
 *   an IRELATIVE relocation fills, and hidden_ptr stores its address in
 *   data.
 * - which: an exported ifunc (an STT_GNU_IFUNC symbol), as dlsym sees it.
 *
 * The resolver records the arguments it got: on AArch64 glibc passes
 * (AT_HWCAP | _IFUNC_ARG_HWCAP, &__ifunc_arg_t), on x86_64 nothing. */
#include <stdint.h>

typedef int fn_t(void);

uint64_t seen_hwcap;
uint64_t seen_arg_size;
uint64_t seen_hwcap2;
int resolver_calls;

static int impl_simd(void) { return 1; }
__attribute__((unused)) static int impl_plain(void) { return 2; }

#if defined(__aarch64__)
struct ifunc_arg {
    uint64_t size, hwcap, hwcap2;
};
#define IFUNC_ARG_HWCAP (1ULL << 62)
#define HWCAP_ASIMD (1ULL << 1)
static fn_t *resolve(uint64_t hwcap, const struct ifunc_arg *arg) {
    resolver_calls++;
    seen_hwcap = hwcap;
    if (hwcap & IFUNC_ARG_HWCAP) {
        seen_arg_size = arg->size;
        seen_hwcap2 = arg->hwcap2;
    }
    return (hwcap & HWCAP_ASIMD) ? impl_simd : impl_plain;
}
#else
static fn_t *resolve(void) {
    resolver_calls++;
    return impl_simd;
}
#endif

__attribute__((visibility("hidden"), ifunc("resolve"))) int which_hidden(void);
int which(void) __attribute__((ifunc("resolve")));

int call_hidden(void) { return which_hidden(); }
fn_t *const hidden_ptr = which_hidden;
int call_via_ptr(void) { return hidden_ptr(); }
int call_exported(void) { return which(); }
