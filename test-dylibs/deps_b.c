/* Needs deps_c (see deps_c.c). */
void memdl_test_host_trace(const char *event);
int c_value(void);

__attribute__((constructor)) static void init(void) { memdl_test_host_trace("init b"); }
__attribute__((destructor)) static void fini(void) { memdl_test_host_trace("fini b"); }

int b_value(void) { return 20 + c_value(); }
