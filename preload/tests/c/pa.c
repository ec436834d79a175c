/* libpa.so: versioned exports, a constructor and a destructor. */
#include <stdio.h>
int pa_counter = 7;
int pa_value(void) { return 1; }
int pa_ver_1(void) { return 1; }
int pa_ver_2(void) { return 2; }
__asm__(".symver pa_ver_1, pa_ver@VERS_1");
__asm__(".symver pa_ver_2, pa_ver@@VERS_2");
__attribute__((constructor)) static void init(void) { printf("pa: init\n"); }
__attribute__((destructor)) static void fini(void) { printf("pa: fini\n"); }
