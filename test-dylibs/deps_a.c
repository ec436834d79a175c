/* Needs deps_b and deps_c (see deps_c.c): 100 + 23 + 3. */
void memdl_test_host_trace(const char *event);
int b_value(void);
int c_value(void);

__attribute__((constructor)) static void init(void) { memdl_test_host_trace("init a"); }
__attribute__((destructor)) static void fini(void) { memdl_test_host_trace("fini a"); }

int a_value(void) { return 100 + b_value() + c_value(); }
