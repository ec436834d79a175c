// std::call_once keeps the callable in libstdc++'s thread-local
// __once_callable/__once_call, which this library imports (general
// dynamic: DTPMOD64/DTPOFF64 against libstdc++'s block).
#include <mutex>

static std::once_flag flag;
static int calls;

extern "C" int run_once(int times) {
    for (int i = 0; i < times; i++)
        std::call_once(flag, [] { ++calls; });
    return calls;
}
