/* libpj.so (in sub/) and libpk.so (in sub2/): found by name through a
   DT_RUNPATH only. */
int pj_value(void) { return 99; }
