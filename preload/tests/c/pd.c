/* libpd.so: state that survives dlclose under RTLD_NODELETE. */
static int state;
void pd_set(int v) { state = v; }
int pd_get(void) { return state; }
