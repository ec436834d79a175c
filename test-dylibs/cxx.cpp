// C++ in a loaded library: static objects constructed at load and
// destroyed at unload (through __cxa_atexit and __cxa_finalize),
// exceptions thrown by libstdc++ and by the library and caught inside it
// (the unwinder must find the library's frame tables), virtual calls, and
// std::string / std::vector / std::unique_ptr from libstdc++ with its
// versioned symbols.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

void (*sink)(void *, int);
void *sink_ctx;

struct Tracker {
    int id;
    explicit Tracker(int i) : id(i) {}
    ~Tracker() {
        if (sink)
            sink(sink_ctx, id);
    }
};

// Constructed in this order, destroyed in the reverse one.
Tracker first(1);
Tracker second(2);

struct Shape {
    virtual ~Shape() = default;
    virtual long area() const = 0;
};

struct Rect : Shape {
    long w, h;
    Rect(long w_, long h_) : w(w_), h(h_) {}
    long area() const override { return w * h; }
};

struct Square : Rect {
    explicit Square(long s) : Rect(s, s) {}
};

long parse_positive(const std::string &s) {
    std::size_t used = 0;
    long v = std::stol(s, &used); // throws std::invalid_argument
    if (used != s.size() || v <= 0)
        throw std::domain_error("not a positive number: " + s);
    return v;
}

} // namespace

extern "C" {

void cxx_set_sink(void (*f)(void *, int), void *ctx) {
    sink = f;
    sink_ctx = ctx;
}

// 12 when both static objects were constructed.
int cxx_static_ids(void) { return first.id * 10 + second.id; }

// Parses `text`; on failure copies the exception's message to `err` and
// returns -1.
long cxx_parse(const char *text, char *err, unsigned long err_size) {
    try {
        return parse_positive(text);
    } catch (const std::exception &e) {
        std::snprintf(err, err_size, "%s", e.what());
        return -1;
    }
}

// Even indices are n x 2 rectangles, odd ones n x n squares.
long cxx_total_area(const long *sides, int n) {
    std::vector<std::unique_ptr<Shape>> shapes;
    for (int i = 0; i < n; i++) {
        if (i % 2)
            shapes.push_back(std::make_unique<Square>(sides[i]));
        else
            shapes.push_back(std::make_unique<Rect>(sides[i], 2));
    }
    long total = 0;
    for (const auto &s : shapes)
        total += s->area();
    return total;
}
}
