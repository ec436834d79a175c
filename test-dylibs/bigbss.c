/* A 64 MiB bss after a little initialised data: the loader must zero the
 * tail of the last file page and map anonymous zero pages for the rest. */

#define BIG (64UL << 20)

char initialised[3000] = {1, 2, 3};
static char big[BIG];

unsigned long bigbss_size(void) { return BIG; }
signed char bigbss_read(unsigned long i) { return i < BIG ? big[i] : -1; }
void bigbss_write(unsigned long i, signed char v) {
    if (i < BIG)
        big[i] = v;
}
int initialised_sum(void) {
    int s = 0;
    for (unsigned long i = 0; i < sizeof initialised; i++)
        s += initialised[i];
    return s;
}
