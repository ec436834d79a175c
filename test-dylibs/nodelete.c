/* Linked with -z nodelete (DF_1_NODELETE): unloading keeps it mapped, its
 * state alive and its finaliser unrun. */

static int count;
static void (*sink)(int);

int nodelete_bump(void) { return ++count; }
void nodelete_set_sink(void (*f)(int)) { sink = f; }

__attribute__((destructor)) static void goodbye(void) {
    if (sink)
        sink(count);
}
