/* Symbol versions from a version script (versioned.map): `foo@V1` is the
 * old, hidden version, `foo@@V2` the default a plain lookup finds. */

int foo_v1(int x) { return x + 1; }
int foo_v2(int x) { return x + 2; }
__asm__(".symver foo_v1, foo@V1");
__asm__(".symver foo_v2, foo@@V2");

/* An unversioned-by-hand export, placed in V2 by the script. */
int versioned_plain(void) { return 42; }

/* Only an old, hidden version: a plain lookup must not find it. */
int bar_v1(int x) { return x * 10; }
__asm__(".symver bar_v1, bar@V1");
