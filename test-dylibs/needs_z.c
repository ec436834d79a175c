/* Needs libz.so.1 (by the soname of zstub, which it is linked against)
 * and has DT_RUNPATH $ORIGIN. */
extern const char *zlibVersion(void);

const char *needs_z_version(void) { return zlibVersion(); }
