/* A 48 MiB thread-local array: each thread's block is big enough that the
 * allocator maps it on its own, so a leaked block shows in /proc/self/maps. */
__thread char tls_big_data[48 << 20];

char *tls_big_touch(void) {
    tls_big_data[0] = 1;
    tls_big_data[sizeof tls_big_data - 1] = 2;
    return tls_big_data;
}
