/* The built-in example library: no libc, no startup files, no imports.
 * Arithmetic, global data read and written, pointers in data (RELATIVE and
 * symbolic 64-bit relocations) and a table of function pointers. */

int add(int a, int b) { return a + b; }
int sub(int a, int b) { return a - b; }
int mul(int a, int b) { return a * b; }

/* Preemptible (default visibility) globals: references to them from data
 * become symbolic relocations (R_X86_64_64 / R_AARCH64_ABS64). */
int counter = 40;
const int answer = 42;
int *const counter_ptr = &counter;

/* A table of exported functions: symbolic relocations again. */
int (*const ops[])(int, int) = {add, sub, mul};

/* Pointers to local data: relative relocations. */
static const char *const names[] = {"add", "sub", "mul"};

int bump(void) { return ++counter; }
int get_counter(void) { return counter; }
void set_counter(int v) { *counter_ptr = v; }

int apply(int op, int a, int b) {
    if (op < 0 || op > 2)
        return -1;
    return ops[op](a, b);
}

const char *op_name(int op) {
    if (op < 0 || op > 2)
        return 0;
    return names[op];
}

long fib(int n) {
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

/* FNV-1a over a caller buffer: the kind of loop a compiled kernel runs. */
unsigned checksum(const unsigned char *p, unsigned long n) {
    unsigned h = 2166136261u;
    for (unsigned long i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}
