/* The bottom of a small dependency tree (deps_a needs deps_b and deps_c,
 * deps_b needs deps_c). Each library reports its initialiser and
 * finaliser to the host, which exports memdl_test_host_trace. */
void memdl_test_host_trace(const char *event);

__attribute__((constructor)) static void init(void) { memdl_test_host_trace("init c"); }
__attribute__((destructor)) static void fini(void) { memdl_test_host_trace("fini c"); }

int c_value(void) { return 3; }
