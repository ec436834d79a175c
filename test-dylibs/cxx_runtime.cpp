// C++ in a loaded library: static constructors and destructors in a known
// order, std::string / std::vector, thread_local objects with destructors,
// exceptions thrown and caught inside the library and across a callback
// into the host.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
typedef void (*cxx_sink_fn)(const char *event);
typedef void (*cxx_callback_fn)(int value);
}

namespace {

// Plain data: no constructor of its own, so usable before and after every
// other static object's lifetime.
char ctor_log[256];
cxx_sink_fn sink;
std::atomic<int> tl_live{0};
std::atomic<int> tl_destroyed{0};

void note(const char *event) {
    if (sink)
        sink(event);
}

struct Recorder {
    const char *name;
    explicit Recorder(const char *n) : name(n) {
        if (ctor_log[0])
            std::strncat(ctor_log, ",", sizeof ctor_log - std::strlen(ctor_log) - 1);
        std::strncat(ctor_log, n, sizeof ctor_log - std::strlen(ctor_log) - 1);
    }
    ~Recorder() { note(name); }
};

// Constructed in definition order, except the prioritised one first;
// destroyed in reverse.
Recorder rec_a("A");
Recorder rec_b("B");
Recorder rec_z __attribute__((init_priority(200)))("Z");
Recorder rec_c("C");

// A static std::string and vector built by constructors.
std::string greeting = std::string("hello") + ", " + "world";
std::vector<int> squares = [] {
    std::vector<int> v;
    for (int i = 1; i <= 10; i++)
        v.push_back(i * i);
    return v;
}();

struct PerThread {
    std::string text;
    std::vector<int> values;
    PerThread() : text("thread") { tl_live++; }
    ~PerThread() {
        tl_live--;
        tl_destroyed++;
        note("thread_local");
    }
};
thread_local PerThread per_thread;

struct LibError {
    int code;
};

} // namespace

extern "C" {

void cxx_set_sink(cxx_sink_fn f) { sink = f; }
const char *cxx_ctor_log(void) { return ctor_log; }

size_t cxx_greeting(char *out, size_t cap) {
    std::snprintf(out, cap, "%s", greeting.c_str());
    return greeting.size();
}

long cxx_squares_sum(void) {
    long s = 0;
    for (int v : squares)
        s += v;
    return s;
}

// Sorts and joins the words with ',' into `out`; returns the full length.
size_t cxx_sort_join(const char *const *words, size_t n, char *out, size_t cap) {
    std::vector<std::string> v(words, words + n);
    std::sort(v.begin(), v.end());
    std::string joined;
    for (size_t i = 0; i < v.size(); i++) {
        if (i)
            joined += ',';
        joined += v[i];
    }
    std::snprintf(out, cap, "%s", joined.c_str());
    return joined.size();
}

// Appends to this thread's object; returns how many values it holds.
int cxx_tl_push(int v) {
    per_thread.values.push_back(v);
    per_thread.text += std::to_string(v);
    return (int)per_thread.values.size();
}
long cxx_tl_sum(void) {
    long s = 0;
    for (int v : per_thread.values)
        s += v;
    return s + (long)per_thread.text.size();
}
int cxx_tl_live(void) { return tl_live.load(); }
int cxx_tl_destroyed(void) { return tl_destroyed.load(); }

// Throws and catches inside the library: std::runtime_error (type from
// libstdc++) and a type of this library.
int cxx_throw_catch(int v) {
    try {
        if (v > 100)
            throw LibError{v};
        if (v > 0)
            throw std::runtime_error("boom " + std::to_string(v));
        return 0;
    } catch (const LibError &e) {
        return -e.code;
    } catch (const std::exception &e) {
        return (int)std::strlen(e.what());
    }
}

void cxx_throw(int v) { throw std::runtime_error(std::to_string(v)); }

// Calls back into the host, which calls cxx_throw: the exception crosses the
// host's frames on its way back here.
int cxx_catch_across(cxx_callback_fn cb, int v) {
    try {
        cb(v);
        return -1;
    } catch (const std::runtime_error &e) {
        return std::atoi(e.what()) * 2;
    } catch (...) {
        return -2;
    }
}

// A plain call chain through the host, for backtraces: not inlined, so the
// frame is this library's.
__attribute__((noinline)) int cxx_call_host(cxx_callback_fn cb, int v) {
    cb(v);
    return v + 1;
}
}
