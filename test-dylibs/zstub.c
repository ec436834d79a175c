/* A decoy with zlib's soname (libz.so.1) and one of its functions: what
 * needs_z links against, and what a search of needs_z's DT_RUNPATH would
 * find first. A library already loaded under the needed name must win
 * over it, as it does with the system loader. */
const char *zlibVersion(void) { return "decoy"; }
