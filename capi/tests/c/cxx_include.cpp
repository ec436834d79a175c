// The header compiles as C++ (g++ -std=c++11 -Wall -Wextra -Werror -c):
// extern "C" linkage, no C-only constructs.
#include "memdl.h"

#include <memory>

namespace {
struct Close {
    void operator()(memdl_image *image) const { memdl_close(image); }
};
}  // namespace

extern "C" int cxx_add(const void *bytes, size_t len) {
    memdl_image *raw = nullptr;
    if (memdl_load(bytes, len, nullptr, &raw) != MEMDL_OK)
        return MEMDL_ERR_OTHER;
    std::unique_ptr<memdl_image, Close> image(raw);
    auto add = reinterpret_cast<int (*)(int, int)>(memdl_sym(image.get(), "add"));
    return add ? add(2, 3) : -1;
}
