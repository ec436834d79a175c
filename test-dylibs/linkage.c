/* Symbol binding and visibility: an undefined weak import nobody defines
 * (resolves to 0), defined weak symbols, and hidden, protected and default
 * visibility (hidden is not exported). */

/* No library of the process defines these: both bind to 0. */
extern int memdl_test_absent_fn(int) __attribute__((weak));
extern int memdl_test_absent_data __attribute__((weak));

unsigned long absent_fn_address(void) { return (unsigned long)&memdl_test_absent_fn; }
unsigned long absent_data_address(void) { return (unsigned long)&memdl_test_absent_data; }

/* Calls the weak import if it exists, else returns the fallback. */
int absent_fn_or(int x, int fallback) {
    return memdl_test_absent_fn ? memdl_test_absent_fn(x) : fallback;
}

/* Defined weak symbols are exported like global ones. */
__attribute__((weak)) int weak_answer(void) { return 7; }
__attribute__((weak)) int weak_value = 1234;

__attribute__((visibility("hidden"))) int hidden_double(int x) { return 2 * x; }
__attribute__((visibility("hidden"))) int hidden_value = 99;
__attribute__((visibility("protected"))) int protected_triple(int x) { return 3 * x; }
static int local_square(int x) { return x * x; }

/* Default visibility: calls through the hidden and local helpers. */
int visible_combo(int x) {
    int (*volatile sq)(int) = local_square;
    return hidden_double(x) + protected_triple(x) + sq(x) + hidden_value;
}
