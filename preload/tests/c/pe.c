/* libpe.so: state that does not survive an unload. */
#include <stdio.h>
static int state;
void pe_set(int v) { state = v; }
int pe_get(void) { return state; }
__attribute__((constructor)) static void init(void) { printf("pe: init\n"); }
__attribute__((destructor)) static void fini(void) { printf("pe: fini\n"); }
