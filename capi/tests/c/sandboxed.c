/* A plugin for a sandbox: it imports two functions only the host may hand
 * it (memdl_options_add_symbol); with host lookups denied and neither
 * provided, the load is refused naming both. */
extern int host_log(int value);
extern int host_scale(int value);
int plugin_run(int x) { return host_log(host_scale(x)); }
