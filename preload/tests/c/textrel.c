/* libtextrel.so: an absolute address in .text (DT_TEXTREL), which memdl
   refuses (it would need writable code) and glibc loads. */
int textrel_fn(void) { return 5; }
__asm__(".text\n.globl textrel_ptr\n.p2align 3\ntextrel_ptr: .quad textrel_fn\n");
