/* libph.so: opened and closed by many threads at once. */
static int calls;
int ph_value(int x) { return x * 3 + (calls++ & 0); }
