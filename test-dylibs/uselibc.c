/* Imports from libc: allocation, formatting, sorting with a comparator
 * (a callback from libc back into this library), string functions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Sorts a copy of `v` on the heap and returns a checksum of the order. */
long sort_checksum(const int *v, int n) {
    int *copy = malloc(sizeof(int) * (size_t)n);
    if (!copy)
        return -1;
    memcpy(copy, v, sizeof(int) * (size_t)n);
    qsort(copy, (size_t)n, sizeof(int), cmp_int);
    long sum = 0;
    for (int i = 0; i < n; i++)
        sum = sum * 31 + copy[i];
    free(copy);
    return sum;
}

/* Formats into the caller's buffer; returns snprintf's result. */
int format_point(char *buf, unsigned long size, int x, double y, const char *label) {
    return snprintf(buf, size, "%s(%d, %.3f)", label, x, y);
}

/* A heap string the caller frees with `free_string`. */
char *repeat(const char *s, int times) {
    size_t n = strlen(s);
    char *out = calloc(n * (size_t)times + 1, 1);
    for (int i = 0; out && i < times; i++)
        memcpy(out + n * (size_t)i, s, n);
    return out;
}

void free_string(char *s) { free(s); }
