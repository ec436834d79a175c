/* libpc.so: imports pa_value without needing libpa: only a global libpa
   (RTLD_GLOBAL) can satisfy it. */
int pa_value(void);
int pc_value(void) { return pa_value() * 100; }
