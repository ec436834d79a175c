/* libpb.so: DT_NEEDED libpa.so, imports pa_value@VERS_2 from it. */
#include <stdio.h>
int pa_value(void);
int pb_value(void) { return pa_value() + 10; }
__attribute__((destructor)) static void fini(void) { printf("pb: fini\n"); }
