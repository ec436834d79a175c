/* The C API from C: built by tests/c_api.rs with -Wall -Wextra -Werror
 * -std=c11, linked statically and against libmemdl.so, and run under
 * valgrind.
 *
 * usage: test_capi LIBTINY.so LIBSANDBOXED.so CONTAINER [CYCLES]
 * LIBTINY exports add, sub, fib, counter, bump; LIBSANDBOXED imports
 * host_log and host_scale; CONTAINER holds LIBTINY at an unaligned offset. */
#define _POSIX_C_SOURCE 200809L

#include "memdl.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static int checks, failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        checks++;                                                              \
        if (!(cond)) {                                                         \
            failures++;                                                        \
            const char *e_ = memdl_last_error();                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n",      \
                    __FILE__, __LINE__, #cond, e_ ? e_ : "none");              \
        }                                                                      \
    } while (0)

/* The last error mentions `what`. */
static int error_names(const char *what) {
    const char *e = memdl_last_error();
    return e != NULL && strstr(e, what) != NULL;
}

typedef int (*binop)(int, int);
typedef long (*fib_fn)(int);

static const char *tiny_path, *sandboxed_path, *container_path;

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)size);
    if (!bytes || fread(bytes, 1, (size_t)size, f) != (size_t)size) {
        perror(path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)size;
    return bytes;
}

/* Loads from memory; the bytes are freed right after the load (the
 * segments are copies). */
static memdl_image *load_path(const char *path, const memdl_options *options) {
    size_t len;
    unsigned char *bytes = read_file(path, &len);
    memdl_image *image = NULL;
    int rc = memdl_load(bytes, len, options, &image);
    free(bytes);
    CHECK(rc == MEMDL_OK);
    CHECK((rc == MEMDL_OK) == (image != NULL));
    return image;
}

/* add, fib and the data symbol of a loaded LIBTINY work; a miss is NULL and
 * its message names the symbol. */
static void check_tiny(const memdl_image *image) {
    binop add = (binop)memdl_sym(image, "add");
    fib_fn fib = (fib_fn)memdl_sym(image, "fib");
    int *counter = memdl_sym(image, "counter");
    CHECK(add != NULL && add(2, 3) == 5);
    CHECK(fib != NULL && fib(10) == 55);
    CHECK(counter != NULL && *counter >= 40);
    CHECK(memdl_sym(image, "no_such_symbol") == NULL);
    CHECK(error_names("no_such_symbol"));
}

static void test_null_and_invalid_arguments(void) {
    unsigned char byte = 0x7f;
    memdl_image *image = (memdl_image *)&byte; /* must become NULL */
    memdl_close(NULL);
    memdl_options_free(NULL);
    CHECK(memdl_load(NULL, 100, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(image == NULL);
    CHECK(error_names("NULL"));
    image = (memdl_image *)&byte;
    CHECK(memdl_load(&byte, 0, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(image == NULL);
    CHECK(memdl_load(&byte, 1, NULL, NULL) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_load_fd(-1, 0, 100, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(image == NULL);
    CHECK(error_names("-1"));
    /* A descriptor that is not open. */
    CHECK(memdl_load_fd(1000, 0, 100, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(error_names("not open"));
    int fd = open(container_path, O_RDONLY);
    CHECK(fd >= 0);
    CHECK(memdl_load_fd(fd, 0, 0, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_load_fd(fd, 0, 64, NULL, NULL) == MEMDL_ERR_INVALID_ARGUMENT);
    /* A range past the end of the file. */
    CHECK(memdl_load_fd(fd, 1u << 30, 4096, NULL, &image) == MEMDL_ERR_MALFORMED);
    CHECK(image == NULL);
    close(fd);
    CHECK(memdl_sym(NULL, "add") == NULL);
    CHECK(error_names("NULL"));
    CHECK(memdl_options_add_symbol(NULL, "x", &byte) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_options_deny_host_lookups(NULL) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_options_use_system_loader(NULL) == MEMDL_ERR_INVALID_ARGUMENT);
    memdl_options *options = memdl_options_new();
    CHECK(options != NULL);
    CHECK(memdl_options_add_symbol(options, NULL, &byte) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_options_add_symbol(options, "", &byte) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_options_add_symbol(options, "x", NULL) == MEMDL_ERR_INVALID_ARGUMENT);
    memdl_options_free(options);

    image = load_path(tiny_path, NULL);
    CHECK(memdl_sym(image, NULL) == NULL);
    memdl_close(image);
}

static void test_load_from_memory(void) {
    memdl_image *image = load_path(tiny_path, NULL);
    if (!image)
        return;
    check_tiny(image);
    binop sub = (binop)memdl_sym(image, "sub");
    int (*bump)(void) = (int (*)(void))memdl_sym(image, "bump");
    CHECK(sub != NULL && sub(7, 2) == 5);
    CHECK(bump != NULL && bump() == 41 && bump() == 42);
    /* Options given explicitly, with defaults. */
    memdl_options *options = memdl_options_new();
    memdl_image *second = load_path(tiny_path, options);
    memdl_options_free(options); /* images do not depend on it */
    if (second) {
        /* Its own data: not the first image's counter. */
        int (*bump2)(void) = (int (*)(void))memdl_sym(second, "bump");
        CHECK(bump2 != NULL && bump2() == 41);
        memdl_close(second);
    }
    memdl_close(image);
}

static void test_garbage_and_truncated(void) {
    size_t len;
    unsigned char *bytes = read_file(tiny_path, &len);
    unsigned char garbage[4096];
    unsigned int seed = 12345;
    for (size_t i = 0; i < sizeof garbage; i++) {
        seed = seed * 1103515245u + 12345u;
        garbage[i] = (unsigned char)(seed >> 16);
    }
    memdl_image *image = (memdl_image *)garbage;
    CHECK(memdl_load(garbage, sizeof garbage, NULL, &image) == MEMDL_ERR_MALFORMED);
    CHECK(image == NULL);
    CHECK(error_names("magic"));
    /* Only the magic; only the ELF header; half of the file. */
    size_t cuts[] = {4, 64, len / 2};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        image = (memdl_image *)garbage;
        int rc = memdl_load(bytes, cuts[i], NULL, &image);
        CHECK(rc == MEMDL_ERR_MALFORMED);
        CHECK(image == NULL);
        CHECK(memdl_last_error() != NULL && strlen(memdl_last_error()) > 0);
    }
    /* Another machine: well-formed, unsupported. */
    bytes[18] ^= 0x55;
    image = (memdl_image *)garbage;
    CHECK(memdl_load(bytes, len, NULL, &image) == MEMDL_ERR_UNSUPPORTED);
    CHECK(image == NULL);
    free(bytes);
}

/* Many threads look symbols up in one image at once, and each thread sees
 * only its own errors. */
struct lookup_job {
    const memdl_image *image;
    int id;
    int bad;
};

static void *lookup_thread(void *arg) {
    struct lookup_job *job = arg;
    char missing[64];
    snprintf(missing, sizeof missing, "missing_in_thread_%d", job->id);
    for (int i = 0; i < 500; i++) {
        binop add = (binop)memdl_sym(job->image, "add");
        fib_fn fib = (fib_fn)memdl_sym(job->image, "fib");
        if (!add || add(i, job->id) != i + job->id || !fib || fib(20) != 6765)
            job->bad++;
        if (memdl_sym(job->image, missing) != NULL || !error_names(missing))
            job->bad++;
    }
    return NULL;
}

static void test_threads(void) {
    memdl_image *image = load_path(tiny_path, NULL);
    if (!image)
        return;
    enum { THREADS = 8 };
    pthread_t threads[THREADS];
    struct lookup_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct lookup_job){image, i, 0};
        CHECK(pthread_create(&threads[i], NULL, lookup_thread, &jobs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        CHECK(pthread_join(threads[i], NULL) == 0);
        CHECK(jobs[i].bad == 0);
    }
    memdl_close(image);
}

/* What IREE does: the library lies inside a container file at an unaligned
 * offset; find its magic and load it from the descriptor. */
static int find_elf(int fd, uint64_t *offset, uint64_t *len) {
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    unsigned char *bytes = malloc((size_t)st.st_size);
    if (!bytes || pread(fd, bytes, (size_t)st.st_size, 0) != st.st_size) {
        free(bytes);
        return -1;
    }
    int found = -1;
    for (off_t i = 0; i + 4 <= st.st_size; i++) {
        if (memcmp(bytes + i, "\x7f" "ELF", 4) == 0) {
            *offset = (uint64_t)i;
            *len = (uint64_t)(st.st_size - i); /* the rest of the container */
            found = 0;
            break;
        }
    }
    free(bytes);
    return found;
}

static void test_load_fd_container(const memdl_options *options) {
    int fd = open(container_path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    uint64_t offset = 0, len = 0;
    CHECK(find_elf(fd, &offset, &len) == 0);
    CHECK(offset % 4096 != 0); /* the point of the test */
    memdl_image *image = NULL;
    CHECK(memdl_load_fd(fd, offset, len, options, &image) == MEMDL_OK);
    close(fd); /* memdl keeps no reference to it */
    if (image) {
        check_tiny(image);
        memdl_close(image);
    }
}

static void test_system_backend(void) {
    memdl_options *options = memdl_options_new();
    CHECK(memdl_options_use_system_loader(options) == MEMDL_OK);
    memdl_image *image = load_path(tiny_path, options);
    if (image) {
        check_tiny(image);
        memdl_close(image);
    }
    test_load_fd_container(options);
    /* Two different libraries at once through the system loader. */
    memdl_image *a = load_path(tiny_path, options);
    size_t len;
    unsigned char *garbage = read_file(sandboxed_path, &len);
    memdl_image *b = NULL;
    /* The sandboxed library's imports are missing: dlopen refuses it. */
    CHECK(memdl_load(garbage, len, options, &b) == MEMDL_ERR_SYSTEM_LOADER);
    CHECK(b == NULL);
    free(garbage);
    memdl_close(a);
    /* The system loader cannot sandbox: refused, not silently ignored. */
    CHECK(memdl_options_deny_host_lookups(options) == MEMDL_OK);
    image = (memdl_image *)options;
    size_t tiny_len;
    unsigned char *tiny = read_file(tiny_path, &tiny_len);
    CHECK(memdl_load(tiny, tiny_len, options, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(image == NULL);
    CHECK(error_names("system loader"));
    free(tiny);
    memdl_options_free(options);
}

static int host_log_calls;
static int host_log(int value) {
    host_log_calls++;
    return value + 1;
}
static int host_scale(int value) { return value * 10; }

static void test_sandbox(void) {
    memdl_options *options = memdl_options_new();
    CHECK(memdl_options_deny_host_lookups(options) == MEMDL_OK);
    size_t len;
    unsigned char *bytes = read_file(sandboxed_path, &len);
    memdl_image *image = (memdl_image *)bytes;
    CHECK(memdl_load(bytes, len, options, &image) == MEMDL_ERR_UNRESOLVED);
    CHECK(image == NULL);
    /* Every missing import, not only the first. */
    CHECK(error_names("host_log"));
    CHECK(error_names("host_scale"));

    /* The host hands them over: the plugin loads and calls back. */
    CHECK(memdl_options_add_symbol(options, "host_log", (void *)host_log) == MEMDL_OK);
    CHECK(memdl_options_add_symbol(options, "host_scale", (void *)host_scale) == MEMDL_OK);
    CHECK(memdl_load(bytes, len, options, &image) == MEMDL_OK);
    if (image) {
        int (*run)(int) = (int (*)(int))memdl_sym(image, "plugin_run");
        CHECK(run != NULL && run(4) == 41 && host_log_calls == 1);
        memdl_close(image);
    }
    free(bytes);
    memdl_options_free(options);
}

/* A sealed memory file: made from bytes, loaded by both backends, sent
 * over a socket; a file without seals is refused. */
static void test_sealed(void) {
    size_t len;
    unsigned char *bytes = read_file(tiny_path, &len);
    int fd = 42;
    CHECK(memdl_seal(NULL, len, &fd) == MEMDL_ERR_INVALID_ARGUMENT && fd == -1);
    CHECK(memdl_seal(bytes, len, NULL) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(memdl_seal(bytes, len, &fd) == MEMDL_OK && fd >= 0);
    free(bytes);
    if (fd < 0)
        return;
    CHECK(write(fd, "x", 1) == -1); /* sealed against writes */

    memdl_options *system = memdl_options_new();
    memdl_options_use_system_loader(system);
    const memdl_options *backends[] = {NULL, system};
    for (int i = 0; i < 2; i++) {
        memdl_image *image = NULL;
        CHECK(memdl_load_sealed(fd, backends[i], &image) == MEMDL_OK);
        if (image) {
            check_tiny(image);
            memdl_close(image);
        }
    }

    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    CHECK(memdl_sealed_send(fd, sv[0]) == MEMDL_OK);
    int received = 42;
    CHECK(memdl_sealed_recv(sv[1], &received) == MEMDL_OK && received >= 0 && received != fd);
    memdl_image *image = NULL;
    CHECK(memdl_load_sealed(received, NULL, &image) == MEMDL_OK);
    if (image) {
        check_tiny(image);
        memdl_close(image);
    }
    close(received);

    /* A plain file could change under the image: refused. */
    int plain = open(tiny_path, O_RDONLY | O_CLOEXEC);
    image = (memdl_image *)&plain;
    CHECK(memdl_load_sealed(plain, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    CHECK(image == NULL);
    CHECK(error_names("sealed"));
    CHECK(memdl_sealed_send(plain, sv[0]) == MEMDL_ERR_INVALID_ARGUMENT);
    close(plain);
    CHECK(memdl_sealed_recv(-1, &received) == MEMDL_ERR_INVALID_ARGUMENT && received == -1);
    CHECK(memdl_load_sealed(-1, NULL, &image) == MEMDL_ERR_INVALID_ARGUMENT);
    close(sv[0]);
    /* The peer closed without sending. */
    CHECK(memdl_sealed_recv(sv[1], &received) < 0 && received == -1);
    close(sv[1]);
    close(fd);
    memdl_options_free(system);
}

/* Load/close cycles: under valgrind, nothing may leak; no descriptor
 * either (the lowest free descriptor number is the same afterwards). */
static void test_cycles(int cycles) {
    int lowest_free = open("/dev/null", O_RDONLY);
    close(lowest_free);
    size_t len;
    unsigned char *bytes = read_file(tiny_path, &len);
    memdl_options *system = memdl_options_new();
    memdl_options_use_system_loader(system);
    for (int i = 0; i < cycles; i++) {
        memdl_options *options = memdl_options_new();
        memdl_image *image = NULL;
        CHECK(memdl_load(bytes, len, options, &image) == MEMDL_OK);
        binop add = (binop)memdl_sym(image, "add");
        CHECK(add != NULL && add(i, 1) == i + 1);
        CHECK(memdl_sym(image, "absent") == NULL);
        memdl_close(image);
        memdl_options_free(options);
        CHECK(memdl_load(bytes, len, system, &image) == MEMDL_OK);
        CHECK(memdl_sym(image, "add") != NULL);
        memdl_close(image);
        CHECK(memdl_load(bytes, len / 3, NULL, &image) == MEMDL_ERR_MALFORMED);
        int fd = -1;
        CHECK(memdl_seal(bytes, len, &fd) == MEMDL_OK);
        CHECK(memdl_load_sealed(fd, system, &image) == MEMDL_OK);
        memdl_close(image);
        close(fd);
    }
    memdl_options_free(system);
    free(bytes);
    int fd = open("/dev/null", O_RDONLY);
    CHECK(fd == lowest_free);
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s LIBTINY.so LIBSANDBOXED.so CONTAINER [CYCLES]\n", argv[0]);
        return 2;
    }
    tiny_path = argv[1];
    sandboxed_path = argv[2];
    container_path = argv[3];
    int cycles = argc > 4 ? atoi(argv[4]) : 20;

    CHECK(memdl_last_error() == NULL); /* nothing failed yet */
    test_null_and_invalid_arguments();
    test_load_from_memory();
    test_garbage_and_truncated();
    test_threads();
    test_load_fd_container(NULL);
    test_system_backend();
    test_sandbox();
    test_sealed();
    test_cycles(cycles);

    printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
