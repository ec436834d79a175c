/* Initialisers and finalisers whose order the host can observe.
 *
 * Initialisers run during the load, before the host can hand the library
 * anything, so they append to `events` (read back through
 * `lifecycle_events`). Finalisers run during unload, when the library's
 * data is about to disappear, so they report to a sink the host registered
 * with `lifecycle_set_sink`.
 *
 * Expected, by the gABI and the GNU linker's sorting of prioritised
 * sections: DT_INIT (1), then DT_INIT_ARRAY in order: priority 101 (2),
 * priority 200 (3), unprioritised (4). At unload DT_FINI_ARRAY in reverse:
 * unprioritised (13), priority 200 (12), priority 101 (11), then DT_FINI
 * (14). An atexit handler registered by a library runs when it is
 * unloaded: __cxa_finalize for the library's __dso_handle, called from the
 * startup files' own .fini_array entry, which sits between the prioritised
 * and the unprioritised entries: (15) after 13, before 12. */

#include <stdlib.h>

#define MAX_EVENTS 16

struct init_args {
    int argc;
    char **argv;
    char **envp;
};

static int events[MAX_EVENTS];
static int event_count;
/* Arguments each initialiser received, indexed by its event number. */
static struct init_args received[5];

static void (*sink)(void *ctx, int event);
static void *sink_ctx;

static void record(int event, int argc, char **argv, char **envp) {
    if (event_count < MAX_EVENTS)
        events[event_count++] = event;
    received[event].argc = argc;
    received[event].argv = argv;
    received[event].envp = envp;
}

static void report(int event) {
    if (sink)
        sink(sink_ctx, event);
}

/* DT_INIT and DT_FINI, named by -Wl,-init= and -Wl,-fini= in build.rs. */
void lifecycle_dt_init(int argc, char **argv, char **envp) { record(1, argc, argv, envp); }
void lifecycle_dt_fini(void) { report(14); }

__attribute__((constructor(101))) static void init_101(int argc, char **argv, char **envp) {
    record(2, argc, argv, envp);
}
__attribute__((constructor(200))) static void init_200(int argc, char **argv, char **envp) {
    record(3, argc, argv, envp);
}
/* Placed in .init_array by hand, as an unprioritised constructor would be. */
static void at_unload(void) { report(15); }
static void init_plain(int argc, char **argv, char **envp) {
    record(4, argc, argv, envp);
    atexit(at_unload);
}
__attribute__((section(".init_array"), used)) static void (*const init_plain_entry)(int, char **, char **) =
    init_plain;

__attribute__((destructor(101))) static void fini_101(void) { report(11); }
__attribute__((destructor(200))) static void fini_200(void) { report(12); }
static void fini_plain(void) { report(13); }
__attribute__((section(".fini_array"), used)) static void (*const fini_plain_entry)(void) = fini_plain;

/* Copies up to `max` recorded initialiser events; returns how many ran. */
int lifecycle_events(int *out, int max) {
    for (int i = 0; i < event_count && i < max; i++)
        out[i] = events[i];
    return event_count;
}

/* What initialiser `event` (1-4) received as argc, argv and envp. */
int lifecycle_init_args(int event, char ***argv, char ***envp) {
    if (event < 1 || event > 4)
        return -1;
    *argv = received[event].argv;
    *envp = received[event].envp;
    return received[event].argc;
}

void lifecycle_set_sink(void (*f)(void *ctx, int event), void *ctx) {
    sink = f;
    sink_ctx = ctx;
}
