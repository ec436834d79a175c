/* Debugger visibility (tests/debugger.rs): built with -g, so the file has
 * .symtab and DWARF. A static function (only in .symtab), an exported
 * caller, a constructor that calls a function a breakpoint can catch, and
 * a crash through a null pointer. */

volatile int debugvis_sink;

__attribute__((noinline)) static int debugvis_local(int x)
{
    debugvis_sink += x;
    return x * 3 + 1;
}

__attribute__((noinline)) void debugvis_in_ctor(void)
{
    debugvis_sink = 7;
}

__attribute__((constructor)) static void debugvis_ctor(void)
{
    debugvis_in_ctor();
}

__attribute__((noinline)) int debugvis_compute(int x)
{
    int y = debugvis_local(x);
    return y + 2;
}

__attribute__((noinline)) int debugvis_crash(int *p)
{
    debugvis_sink = 1;
    return *p + debugvis_local(1);
}
