/* What IREE's runtime does with memdl: its executables are ELF shared
 * objects embedded in a larger container file, at any offset. Find the
 * library in the container, load it straight from the file descriptor (no
 * temporary file, no copy of the container in memory), look up a function
 * and call it.
 *
 * usage: load_from_container CONTAINER [FUNCTION]
 * FUNCTION (default "add") must be an int (int, int) function.
 *
 * Build (from the repository root, after cargo build --release -p memdl-capi):
 *   cc -std=c11 -Icapi/include examples/c/load_from_container.c \
 *      -Ltarget/release -lmemdl -Wl,-rpath,$PWD/target/release */
#define _POSIX_C_SOURCE 200809L

#include <memdl.h>

#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes an ELF64 image at `p` (with `avail` bytes after it) spans: to the
 * end of its last segment or section header table; 0 if it is no ELF64. */
static uint64_t elf_extent(const unsigned char *p, uint64_t avail) {
    Elf64_Ehdr eh;
    if (avail < sizeof eh)
        return 0;
    memcpy(&eh, p, sizeof eh);
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64 ||
        eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > avail ||
        (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr) > avail - eh.e_phoff)
        return 0;
    uint64_t end = eh.e_phoff + (uint64_t)eh.e_phnum * sizeof(Elf64_Phdr);
    if (eh.e_shoff != 0 && eh.e_shoff <= avail) {
        uint64_t sh_end = eh.e_shoff + (uint64_t)eh.e_shnum * eh.e_shentsize;
        end = sh_end > end ? sh_end : end;
    }
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, p + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_offset > avail || ph.p_filesz > avail - ph.p_offset)
            return 0;
        if (ph.p_offset + ph.p_filesz > end)
            end = ph.p_offset + ph.p_filesz;
    }
    return end <= avail ? end : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CONTAINER [FUNCTION]\n", argv[0]);
        return 2;
    }
    const char *function = argc > 2 ? argv[2] : "add";
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) {
        perror(argv[1]);
        return 1;
    }
    /* Scan a read-only view for the ELF magic, as `memdl extract` does. */
    const unsigned char *view = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (view == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint64_t size = (uint64_t)st.st_size, offset = 0, len = 0;
    for (uint64_t i = 0; i + SELFMAG <= size; i++) {
        if (view[i] == ELFMAG0 && (len = elf_extent(view + i, size - i)) != 0) {
            offset = i;
            break;
        }
    }
    munmap((void *)view, (size_t)st.st_size);
    if (len == 0) {
        fprintf(stderr, "%s: no ELF image inside\n", argv[1]);
        return 1;
    }
    printf("found a %llu-byte ELF image at offset %llu\n", (unsigned long long)len,
           (unsigned long long)offset);

    memdl_image *image = NULL;
    int rc = memdl_load_fd(fd, offset, len, NULL, &image);
    close(fd); /* the image does not need the descriptor any more */
    if (rc != MEMDL_OK) {
        fprintf(stderr, "memdl_load_fd: %s (%d)\n", memdl_last_error(), rc);
        return 1;
    }
    int (*fn)(int, int) = (int (*)(int, int))memdl_sym(image, function);
    if (fn == NULL) {
        fprintf(stderr, "memdl_sym: %s\n", memdl_last_error());
        memdl_close(image);
        return 1;
    }
    printf("%s(2, 3) = %d\n", function, fn(2, 3));
    memdl_close(image);
    return 0;
}
