/* A test library without libc (-nostdlib): functions, data, no imports. */
int add(int a, int b) { return a + b; }
int sub(int a, int b) { return a - b; }
long fib(int n) {
    long a = 0, b = 1;
    for (int i = 0; i < n; i++) {
        long t = a + b;
        a = b;
        b = t;
    }
    return a;
}
int counter = 40;
int bump(void) { return ++counter; }
