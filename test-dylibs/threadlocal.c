/* Thread-local storage: initialised (.tdata) and zeroed (.tbss) variables,
 * exported and local, as a dlopen'd library reaches them (general or local
 * dynamic model: __tls_get_addr on x86_64, TLS descriptors on aarch64). */

__thread int tls_counter = 100;
__thread long tls_total;
static __thread char tls_name[16] = "initial";

int tls_bump(void) { return ++tls_counter; }
long tls_add(long v) { return tls_total += v; }
int *tls_counter_address(void) { return &tls_counter; }
const char *tls_name_get(void) { return tls_name; }
void tls_name_set(char c) { tls_name[0] = c; }
