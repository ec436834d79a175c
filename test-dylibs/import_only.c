/* A library that only imports: its GNU hash table hashes no symbol, so it
 * says nothing of how many symbols the table has (as a Python build's
 * libpython3.so). */
void memdl_test_host_trace(const char *event);
__attribute__((constructor)) static void init(void) { memdl_test_host_trace("import only"); }
