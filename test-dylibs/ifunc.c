/* STT_GNU_IFUNC: an exported ifunc (found by symbol lookup, called from
 * inside through a JUMP_SLOT and taken as a data pointer through a
 * symbolic relocation) and a hidden ifunc (R_*_IRELATIVE). The resolvers
 * use nothing that needs relocating: they run while the loader relocates. */

static int times_three(int x) { return 3 * x; }
static int negated(int x) { return -x; }

typedef int (*int_fn)(int);

static int_fn pick_scale(void) { return times_three; }
static int_fn pick_negate(void) { return negated; }

int scale(int) __attribute__((ifunc("pick_scale")));
__attribute__((visibility("hidden"))) int negate(int) __attribute__((ifunc("pick_negate")));

int_fn const scale_ptr = scale;
int_fn const negate_ptr = negate;

int call_scale(int x) { return scale(x) + 1; }
int call_negate(int x) { return negate(x); }
int call_scale_ptr(int x) { return scale_ptr(x); }
int call_negate_ptr(int x) { return negate_ptr(x); }
int_fn scale_address(void) { return scale_ptr; }
