/* Imports a function the host supplies: through memdl's resolver
 * (Options::symbol) or, for the system loader, the test executable's
 * exported dynamic symbols. */

extern int memdl_test_host_scale(int x);

int callback_sum(int a, int b) { return memdl_test_host_scale(a) + memdl_test_host_scale(b); }

/* Where the import was bound. */
int (*callback_target(void))(int) { return memdl_test_host_scale; }

/* Defined here and also exported by the test executable: a call from
 * inside shows whether a definition in the global scope takes precedence
 * over the library's own (symbol interposition). */
int memdl_test_host_interposed(void) { return 1; }
int call_interposed(void) { return memdl_test_host_interposed(); }
