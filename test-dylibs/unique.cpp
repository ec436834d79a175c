// A template's static data member: GCC makes it STB_GNU_UNIQUE, so every
// library defining it shares one instance in the process (built twice, as
// libunique1.so and libunique2.so).
template <class T> struct Holder {
    static int value;
};
template <class T> int Holder<T>::value = 1;

extern "C" int *unique_address() { return &Holder<int>::value; }
extern "C" int unique_bump() { return ++Holder<int>::value; }
