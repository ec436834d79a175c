/* Many pointers to the library's own data: relative relocations, which
 * -z pack-relative-relocs packs into DT_RELR. The table mixes pointer and
 * non-pointer words so the packed form needs address entries and bitmaps
 * with gaps; a lone pointer far away needs a new address entry. */

struct entry {
    const char *name;
    long value;
    const long *next_value;
};

static const char *const words[] = {"zero", "one", "two", "three", "four", "five", "six", "seven"};

#define E(i) {#i, i, &table[(i + 1) % 80].value}
static struct entry table[80] = {
    E(0), E(1), E(2), E(3), E(4), E(5), E(6), E(7), E(8), E(9),
    E(10), E(11), E(12), E(13), E(14), E(15), E(16), E(17), E(18), E(19),
    E(20), E(21), E(22), E(23), E(24), E(25), E(26), E(27), E(28), E(29),
    E(30), E(31), E(32), E(33), E(34), E(35), E(36), E(37), E(38), E(39),
    E(40), E(41), E(42), E(43), E(44), E(45), E(46), E(47), E(48), E(49),
    E(50), E(51), E(52), E(53), E(54), E(55), E(56), E(57), E(58), E(59),
    E(60), E(61), E(62), E(63), E(64), E(65), E(66), E(67), E(68), E(69),
    E(70), E(71), E(72), E(73), E(74), E(75), E(76), E(77), E(78), E(79),
};

static char far_gap[8192] = {1};
static const char *far_pointer = far_gap + 100;

/* Sum over the table of each entry's value plus the next entry's value
 * read through its pointer, plus the lengths of the names: 2 * (0+..+79)
 * + (10 * 1 + 70 * 2) = 6320 + 150 = 6470. */
long relr_table_sum(void) {
    long sum = 0;
    for (int i = 0; i < 80; i++) {
        const char *n = table[i].name;
        while (*n++)
            sum++;
        sum += table[i].value + *table[i].next_value;
    }
    return sum;
}

const char *relr_word(int i) { return (i >= 0 && i < 8) ? words[i] : 0; }

/* 100 if the far pointer was relocated to far_gap + 100. */
long relr_far_offset(void) { return (long)(far_pointer - far_gap); }
